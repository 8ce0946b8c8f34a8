#!/usr/bin/env bash
# Runs bench/compare_pytorch.py with a python3 that has torch.
# usage: bench/compare-pytorch.sh [BUILD_DIR] [compare_pytorch.py options]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
shift || true
bash "$here/../scripts/install-deps.sh" >/dev/null
source "$here/../scripts/find-python.sh"
moe_find_python torch
exec "$MOE_PYTHON" "$here/compare_pytorch.py" "$build/bench/moe_bench" "$@"
