#!/usr/bin/env bash
# A build without CUDA (MOE_WITH_CUDA=OFF) builds, passes every test, and carries no
# CUDA, cuBLAS or NCCL dependency or symbol reference (CI runs this after the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset cpu-only >/dev/null
cmake --build --preset cpu-only -j "$(nproc)"
ctest --preset cpu-only -j "$(nproc)"
if ldd build-cpu/libmoe.so | grep -iE "cuda|cublas|nccl"; then
  echo "check-cpu-only: FAIL: libmoe links a CUDA library"; exit 1
fi
if nm -D --undefined-only build-cpu/libmoe.so | grep -E " (cuda|cublas|nccl)[A-Za-z_]"; then
  echo "check-cpu-only: FAIL: libmoe refers to CUDA symbols"; exit 1
fi
echo "check-cpu-only: ok (no CUDA dependency, every test passes)"
