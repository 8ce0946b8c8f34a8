#!/usr/bin/env bash
# Runs test_h5py_interop.py with a python3 that has numpy and h5py (Debian's).
# usage: run-h5py-test.sh MOE_BINARY WORK_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../../scripts/find-python.sh"
moe_find_python numpy h5py
rm -rf "$2"
exec "$MOE_PYTHON" "$here/test_h5py_interop.py" "$1" "$2"
