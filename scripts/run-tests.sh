#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs every test
# (unit, multi-rank, install-tree consumer; GPU tests skip without a GPU).
#   extra arguments go to ctest, e.g. scripts/run-tests.sh -L unit
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset default
cmake --build --preset default -j "$(nproc)"
ctest --preset default -j "$(nproc)" "$@"
