#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs, for a GPU machine that has the CUDA toolkit
# and driver but none of moe's other dependencies and no package access: the test
# and benchmark programs, libmoe, and every shared library they need except the C/C++
# runtime and CUDA's own (the GPU machine has those), packed as gpu-bundle.tar.xz.
# Built for sm_90 (H100/H200) with NCCL (the check runs it at one rank; libnccl.so.2
# comes from PyTorch's NVIDIA wheels there).
# usage: scripts/make-gpu-bundle.sh [CUDA_ARCHITECTURES]
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-90}
bash scripts/install-deps.sh >/dev/null
cmake -S . -B build-gpu-bundle -DCMAKE_BUILD_TYPE=Release -DMOE_WITH_CUDA=ON -DMOE_WITH_NCCL=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$arch" >/dev/null
cmake --build build-gpu-bundle -j "$(nproc)" --target moe_cuda_tests moe_mpi_tests gpu_bench gemm_methods moe_dist_bench \
      moe_cli decode_with_cuda_graph racecheck_canary >/dev/null
rm -rf gpu-bundle && mkdir -p gpu-bundle/bin gpu-bundle/lib
cp build-gpu-bundle/tests/cuda/moe_cuda_tests build-gpu-bundle/tests/cuda/racecheck_canary \
   build-gpu-bundle/tests/mpi/moe_mpi_tests \
   build-gpu-bundle/bench/gpu_bench build-gpu-bundle/bench/gemm_methods build-gpu-bundle/bench/moe_dist_bench \
   build-gpu-bundle/bin/moe \
   build-gpu-bundle/examples/decode_with_cuda_graph gpu-bundle/bin/
cp -L build-gpu-bundle/libmoe.so.0 gpu-bundle/lib/
# Every library the programs load, but the C/C++ runtime and CUDA's (found there).
skip='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|librt\.|libpthread\.|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libnccl)'
for program in gpu-bundle/bin/* gpu-bundle/lib/libmoe.so.0; do
  LD_LIBRARY_PATH=gpu-bundle/lib ldd "$program" | awk '$3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  [[ "$name" =~ $skip ]] || cp -Ln "$path" gpu-bundle/lib/
done
# The code the programs were built from, for the check's report (the GPU machine's copy
# of the tree has no git history): the commit, marked when the tree had changes.
git rev-parse --short HEAD >gpu-bundle/COMMIT 2>/dev/null || echo unknown >gpu-bundle/COMMIT
git diff --quiet HEAD 2>/dev/null || sed -i 's/$/ + uncommitted changes/' gpu-bundle/COMMIT
tar -C . -cJf gpu-bundle.tar.xz gpu-bundle
echo "gpu-bundle.tar.xz: $(du -h gpu-bundle.tar.xz | cut -f1) ($(ls gpu-bundle/lib | wc -l) libraries); carry it with the run"
