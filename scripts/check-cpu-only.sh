#!/usr/bin/env bash
# A Release build without CUDA (the cpu-only preset, MOE_WITH_CUDA=OFF): the library and
# the moe program build, carry no CUDA, cuBLAS or NCCL dependency or symbol reference,
# say why when asked for a GPU, and run the README's main job. CI runs this after the
# tests.
#
# The rest is not built or run a third time here. The CUDA switch changes one source of
# the library (kernels/ops_factory.cpp) and which targets and tests are registered. The
# debug preset is built without CUDA too: scripts/check-sanitizers.sh builds its every
# target (all but the Python module, whose sources have no CUDA switch) and runs its
# every test, and scripts/run-tests.sh runs the same tests, the module's too, in
# Release. Building and running them here as well took 290-380 s of CI's 25-28 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >/dev/null
cmake --preset cpu-only >/dev/null
cmake --build --preset cpu-only -j "$(nproc)" --target moe moe_cli
if ldd build-cpu/libmoe.so | grep -iE "cuda|cublas|nccl"; then
  echo "check-cpu-only: FAIL: libmoe links a CUDA library"; exit 1
fi
if nm -D --undefined-only build-cpu/libmoe.so | grep -E " (cuda|cublas|nccl)[A-Za-z_]"; then
  echo "check-cpu-only: FAIL: libmoe refers to CUDA symbols"; exit 1
fi

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
echo "check-cpu-only: ok (libmoe and moe build, no CUDA dependency, the GPU error, a 2-rank training run)"
