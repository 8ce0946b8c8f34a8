#!/usr/bin/env bash
# Runs test_import.py with a python3 that has numpy and h5py (Debian's).
# usage: run-import-test.sh MOE_BIN_DIR WORK_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../scripts/find-python.sh"
moe_find_python numpy h5py
rm -rf "$2"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
exec "$MOE_PYTHON" "$here/test_import.py" "$1" "$2"
