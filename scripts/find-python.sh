# Sourced by scripts: sets MOE_PYTHON to a python3 that can import the modules named
# in $@ (Debian's python3-numpy, -h5py and -torch serve /usr/bin/python3, which may
# not be the first python3 on PATH). Returns 1 if none can.
moe_find_python() {
  local imports candidate
  imports=$(printf 'import %s;' "$@")
  for candidate in ${MOE_PYTHON:-} /usr/bin/python3 "$(command -v python3 2>/dev/null)"; do
    [[ -n "$candidate" && -x "$candidate" ]] || continue
    if "$candidate" -c "$imports" 2>/dev/null; then
      MOE_PYTHON=$candidate
      return 0
    fi
  done
  echo "no python3 can import: $*; run scripts/install-deps.sh" >&2
  return 1
}
