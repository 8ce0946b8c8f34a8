#!/usr/bin/env bash
# Runs the moe Python package's tests against a build tree:
#   run-pytest.sh BUILD_DIR PYTHON [pytest args...]
# Exits 77 (CTest's skip) when the package was not built or pytest/torch is missing,
# saying which.
set -uo pipefail
build=$1 python=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH="$build/python:$here${PYTHONPATH:+:$PYTHONPATH}"
export MOE_BUILD_DIR=$build
for module in moe pytest torch numpy h5py; do
  if ! "$python" -c "import $module" 2>/dev/null; then
    echo "SKIP: $python cannot import $module (build with MOE_WITH_PYTHON, scripts/install-deps.sh)"
    exit 77
  fi
done
cd "$here"
exec "$python" -m pytest -q -p no:cacheprovider "$@" .
