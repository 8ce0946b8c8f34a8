# Sourced by the shell tests: check NAME COMMAND... runs COMMAND, prints ok or FAIL
# with NAME, and counts failures in $failures.
failures=0
check() {
  local name=$1
  shift
  if "$@"; then echo "ok    $name"; else echo "FAIL  $name"; failures=$((failures + 1)); fi
}
