#!/usr/bin/env bash
# A Release build without CUDA (the cpu-only preset, MOE_WITH_CUDA=OFF) builds every
# target, carries no CUDA, cuBLAS or NCCL dependency or symbol reference, says why when
# asked for a GPU, and runs the README's main job. CI runs this after the tests.
#
# The test suite is not run a third time here. The CUDA switch changes one source of
# the library (kernels/ops_factory.cpp) and which tests are registered; every test of a
# build without CUDA runs under the sanitizers in scripts/check-sanitizers.sh (the debug
# preset is built without CUDA), and the same tests run in Release in
# scripts/run-tests.sh. Running them here as well took 130-190 s of CI's 25-28 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset cpu-only >/dev/null
cmake --build --preset cpu-only -j "$(nproc)"
if ldd build-cpu/libmoe.so | grep -iE "cuda|cublas|nccl"; then
  echo "check-cpu-only: FAIL: libmoe links a CUDA library"; exit 1
fi
if nm -D --undefined-only build-cpu/libmoe.so | grep -E " (cuda|cublas|nccl)[A-Za-z_]"; then
  echo "check-cpu-only: FAIL: libmoe refers to CUDA symbols"; exit 1
fi
# The tests whose expected errors depend on the switch (the layer's device option).
ctest --preset cpu-only -R '^LayerOptions\.'

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
small=(--experts 4 --top-k 2 --hidden 16 --expert-dim 8 --tokens 32)
# Asked for a GPU, the program ends with the reason, not a crash.
if build-cpu/bin/moe train --device cuda --steps 1 "${small[@]}" >"$work/cuda.log" 2>&1; then
  echo "check-cpu-only: FAIL: moe train --device cuda succeeded without CUDA"; exit 1
fi
grep -q "options.device = cuda but this moe was built without CUDA" "$work/cuda.log" ||
  { echo "check-cpu-only: FAIL: moe train --device cuda said:"; cat "$work/cuda.log"; exit 1; }
# The main job (scripts/run-main-job.sh), short: two ranks train and save a checkpoint,
# which the program then reads.
build-cpu/bin/moe-run -np 2 build-cpu/bin/moe train --steps 5 "${small[@]}" --ckpt "$work/train.h5" >"$work/train.log"
build-cpu/bin/moe info "$work/train.h5" >"$work/info.log"
echo "check-cpu-only: ok (every target builds, no CUDA dependency, the GPU error, a 2-rank training run)"
