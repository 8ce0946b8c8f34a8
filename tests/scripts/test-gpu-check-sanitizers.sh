#!/usr/bin/env bash
# scripts/gpu-check.sh's section 6 (compute-sanitizer on the cuda tests) without a GPU:
# the check runs in a copy of the scripts with stand-ins for the test program, the
# racecheck canary and compute-sanitizer. The stand-in tests take 2 s in each racecheck
# shard (no time under the other tools), and the stand-in tool reports a hazard in
# racecheck's shard 3 only. Checked: each tool's
# rows and verdicts (a hazard is FAIL, the canary "seen"), each row's seconds, and the
# racecheck shards running at once (about 2 s in all) by default, 6 s faster than one
# after another (about 8 s) with MOE_RACECHECK_AT_ONCE=0.
set -euo pipefail
python=${1:-python3}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
repo=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$dir/tree/scripts" "$dir/tree/gpu-bundle/bin" "$dir/path"
cp "$repo/scripts/gpu-check.sh" "$repo/scripts/gpu-report.py" "$dir/tree/scripts/"

# The cuda tests: gtest's lines for one test in the shard, after 2 s under racecheck.
cat >"$dir/tree/gpu-bundle/bin/moe_cuda_tests" <<'EOF'
#!/usr/bin/env bash
echo "Note: This is test shard $((GTEST_SHARD_INDEX + 1)) of $GTEST_TOTAL_SHARDS."
echo "[==========] Running 1 test from 1 test suite."
if [[ $STANDIN_TOOL == racecheck ]]; then sleep 2; fi
echo "[  PASSED  ] 1 test."
EOF
printf '#!/usr/bin/env bash\necho canary\n' >"$dir/tree/gpu-bundle/bin/racecheck_canary"
# The tool: runs the program, then its summary; a race in the canary and in shard 3.
cat >"$dir/path/compute-sanitizer" <<'EOF'
#!/usr/bin/env bash
tool=$2
while [[ $1 == --* ]]; do shift 2; done
STANDIN_TOOL=$tool "$@"
status=$?
if [[ $tool != racecheck ]]; then echo "========= ERROR SUMMARY: 0 errors"
elif [[ $1 == *racecheck_canary || ${GTEST_SHARD_INDEX:-} == 2 ]]; then
  echo "========= RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)"
else echo "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)"
fi
exit $status
EOF
chmod +x "$dir/tree/gpu-bundle/bin/"* "$dir/path/compute-sanitizer"

# run NAME [VAR=VALUE...]: section 6 alone; its summary in $dir/NAME, its seconds in $took.
run() {
  local name=$1 start
  shift
  start=$(date +%s.%N)
  env "$@" PATH="$dir/path:$PATH" MOE_CHECK_SECTIONS=6 MOE_CHECK_SECONDS=300 \
    bash "$dir/tree/scripts/gpu-check.sh" "$dir/results_$name" >"$dir/$name.log" 2>&1 ||
    { echo "gpu-check.sh ($name) exited $?:" >&2; tail -20 "$dir/$name.log" >&2; exit 1; }
  took=$("$python" -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$start" "$(date +%s.%N)")
  cp "$dir/results_$name/summary.txt" "$dir/$name"
}
expect() {  # expect FILE PATTERN: some line of the summary matches it
  grep -Eq -- "$2" "$dir/$1" || { echo "no line of $1 matches: $2" >&2; cat "$dir/$1" >&2; exit 1; }
}
check_rows() {
  local name=$1 shard
  expect "$name" '^compute-sanitizer memcheck \(cuda tests\) +pass +ERROR SUMMARY: 0 errors, tests exit 0 in [0-9]+ s'
  expect "$name" '^racecheck on a race \(the canary\) +seen +1 hazards'
  for shard in 1 2 4; do
    expect "$name" "^compute-sanitizer racecheck \(CudaOps\.\*, shard $shard/4\) +pass +RACECHECK SUMMARY: 0 hazards.*\
tests exit 0 in [0-9]+ s \(racecheck_$((shard - 1)).log\)"
  done
  expect "$name" '^compute-sanitizer racecheck \(CudaOps\.\*, shard 3/4\) +FAIL +RACECHECK SUMMARY: 1 hazard'
  expect "$name" '^compute-sanitizer initcheck \(bf16 cuBLAS C\) +pass'
  expect "$name" '^compute-sanitizer initcheck \(cuda tests\) +pass'
  [[ $(grep -c '^compute-sanitizer racecheck' "$dir/$name") == 4 ]] || { echo "not 4 racecheck rows" >&2; exit 1; }
  ! ls "$dir/results_$name/"*.status 2>/dev/null || { echo "status files left behind" >&2; exit 1; }
}

# racecheck's four shards of 2 s: 2 s at once, 8 s one after another. The test compares
# the two runs' times, not each with a fixed figure, so that a loaded machine's overhead
# counts in both.
run together
together=$took
check_rows together
run apart MOE_RACECHECK_AT_ONCE=0
check_rows apart
echo "section 6: $together s with the shards at once, $took s one after another (6 s apart expected)"
"$python" -c "import sys; sys.exit(float(sys.argv[2]) - float(sys.argv[1]) < 4)" "$together" "$took" ||
  { echo "the shards at once did not save their 6 s" >&2; exit 1; }
# The report judges the FAIL shard.
grep -Eq 'compute-sanitizer racecheck: 0 errors.*not met' "$dir/results_together/report.md" ||
  { echo "report.md does not judge racecheck not met" >&2; cat "$dir/results_together/report.md" >&2; exit 1; }
echo "gpu-check section 6: ok"
