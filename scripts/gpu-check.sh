#!/usr/bin/env bash
# The prepared GPU check (issue 6), for a machine with one GPU and no package access.
# It takes the programs from gpu-bundle.tar.xz (scripts/make-gpu-bundle.sh, carried
# with the tree) or builds them when every dependency is there; then
#   1. runs every `cuda` test: each CUDA op against the CPU op, the layer on the GPU
#      against the CPU (forward in fp32/tf32/bf16, backward, AdamW, checkpoints);
#   2. runs the multi-rank invariance and traffic tests with two ranks sharing the GPU
#      over the MPI transport, where mpirun exists;
#   3. times forward (bf16, fp32) and forward + backward (fp32) at the mid config
#      against cuBLAS doing the same FLOPs and against PyTorch eager on the same GPU;
# and prints a table last. Meant to finish well inside 8 minutes.
# usage: scripts/gpu-check.sh [RESULTS_DIR]     (default $OUT, else ./gpu-check-results)
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:-${OUT:-$PWD/gpu-check-results}}
mkdir -p "$results"
rows=()
row() { rows+=("$(printf '%-44s %-10s %s' "$1" "$2" "$3")"); }
elapsed() { echo "$((SECONDS))s"; }

echo "== GPU"
nvidia-smi -L 2>&1 | tee "$results/gpu.txt" || true

echo "== programs"
# CUDA's own libraries come from the machine: the toolkit's, or PyTorch's wheels.
for dir in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -d $dir ]] && export LD_LIBRARY_PATH=$dir:${LD_LIBRARY_PATH:-}
done
if python3 -c "import nvidia" 2>/dev/null; then
  for dir in $(python3 -c "import nvidia, os; b = list(nvidia.__path__)[0]; print(' '.join(os.path.join(b, d, 'lib') for d in os.listdir(b)))"); do
    [[ -d $dir ]] && export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}:$dir
  done
fi
if [[ -f gpu-bundle.tar.xz && ! -x gpu-bundle/bin/moe_cuda_tests ]]; then tar -xJf gpu-bundle.tar.xz; fi
if [[ -x gpu-bundle/bin/moe_cuda_tests ]]; then
  bin=$PWD/gpu-bundle/bin
  export LD_LIBRARY_PATH=$PWD/gpu-bundle/lib:${LD_LIBRARY_PATH:-}
  row "programs" "bundle" "gpu-bundle.tar.xz (built elsewhere for sm_90)"
else
  echo "no gpu-bundle.tar.xz: building here"
  if cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DMOE_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=native \
       >"$results/build.log" 2>&1 &&
     cmake --build build-gpu -j "$(nproc)" --target moe_cuda_tests moe_mpi_tests gpu_bench moe_cli \
       >>"$results/build.log" 2>&1; then
    mkdir -p build-gpu/check-bin
    cp build-gpu/tests/cuda/moe_cuda_tests build-gpu/tests/mpi/moe_mpi_tests build-gpu/bench/gpu_bench \
       build-gpu/bin/moe build-gpu/check-bin/
    bin=$PWD/build-gpu/check-bin
    row "programs" "built" "build-gpu ($(elapsed))"
  else
    tail -20 "$results/build.log"
    row "programs" "FAILED" "no bundle, and the build failed (see build.log)"
    printf '%s\n' "${rows[@]}"
    exit 1
  fi
fi
if ! ldd "$bin/moe_cuda_tests" >"$results/ldd.txt" 2>&1 || grep -q "not found" "$results/ldd.txt"; then
  grep "not found" "$results/ldd.txt"
  row "libraries" "FAILED" "$(grep -c 'not found' "$results/ldd.txt") not found (ldd.txt)"
fi

echo "== 1. cuda tests (each op against the CPU, the layer on the GPU) $(elapsed)"
timeout 300 "$bin/moe_cuda_tests" --gtest_output="xml:$results/cuda_tests.xml" >"$results/cuda_tests.log" 2>&1
status=$?
tail -3 "$results/cuda_tests.log"
passed=$(grep -c '^\[       OK \]' "$results/cuda_tests.log")
failed=$(grep -c '^\[  FAILED  \]' "$results/cuda_tests.log")
# A test skipped for want of a GPU means the check did not run; gtest's summary
# "[  SKIPPED ]" lines, and the one test that skips because a GPU is present, do not.
skipped=$(grep -c 'no CUDA device' "$results/cuda_tests.log")
if ((status == 0 && skipped == 0 && passed > 0)); then
  row "cuda tests (ops + layer, P=1)" "pass" "$passed tests"
else
  grep -A3 "Failure" "$results/cuda_tests.log" | head -40
  row "cuda tests (ops + layer, P=1)" "FAIL" "exit $status: $passed ok, $((failed / 2)) failed, $skipped skipped"
fi

echo "== 1b. compute-sanitizer memcheck on the cuda tests $(elapsed)"
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [[ -n "$sanitizer" ]]; then
  timeout 240 "$sanitizer" --tool memcheck --error-exitcode 9 "$bin/moe_cuda_tests" \
    --gtest_filter='CudaOps.*:CudaLayer.GluSigmoidAndSharedExpertMatchTheCpu' >"$results/memcheck.log" 2>&1
  status=$?
  tail -2 "$results/memcheck.log"
  row "compute-sanitizer memcheck (ops, glu layer)" "$([[ $status == 0 ]] && echo pass || echo FAIL)" \
    "exit $status, $(grep -c '^=========  ' "$results/memcheck.log") report lines (memcheck.log)"
else
  row "compute-sanitizer memcheck" "not run" "no compute-sanitizer"
fi

echo "== 2. two ranks sharing the GPU over MPI $(elapsed)"
if command -v mpirun >/dev/null; then
  MOE_TEST_DEVICE=cuda OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 180 \
    mpirun -np 2 --oversubscribe "$bin/moe_mpi_tests" --gtest_filter='*Invariance*:Traffic*:Parameters*:*ExpertBias*' \
    >"$results/mpi_cuda.log" 2>&1
  status=$?
  tail -2 "$results/mpi_cuda.log"
  verdict=$([[ $status == 0 ]] && echo pass || ([[ $status == 77 ]] && echo "no GPU" || echo FAIL))
  row "invariance at P=2 on one GPU (MPI)" "$verdict" "exit $status (mpi_cuda.log)"
else
  row "invariance at P=2 on one GPU (MPI)" "not run" "no mpirun on this machine"
fi

echo "== 3. timings at the mid config (E=8 k=2 H=1024 F=4096 T=4096) $(elapsed)"
bench() {  # bench MODE PRECISION TORCH_DTYPE
  local line torch_ms
  line=$(timeout 120 "$bin/gpu_bench" --config mid --mode "$1" --precision "$2" 2>>"$results/bench.log")
  if [[ -z "$line" ]]; then
    row "$1 $2" "FAILED" "gpu_bench: $(grep gpu_bench "$results/bench.log" | tail -1)"
    return
  fi
  echo "$line" >>"$results/bench.csv"
  torch_ms=$(timeout 120 python3 bench/torch_moe.py --config mid --device cuda --dtype "$3" --mode "$1" --reps 20 \
               2>>"$results/bench.log")
  IFS=, read -r _ _ _ _ _ _ _ moe_ms cublas_ms tflops ratio <<<"$line"
  if [[ -n "${moe_ms:-}" ]]; then
    local vs_torch="-"
    [[ -n "$torch_ms" ]] && vs_torch=$(awk -v t="$torch_ms" -v m="$moe_ms" 'BEGIN { printf "%.2f", t / m }')
    row "$1 $2: moe ms / cuBLAS ms / torch ms" "$moe_ms" "$cublas_ms / ${torch_ms:--}  → moe/cuBLAS ${ratio}, ${vs_torch}× torch, ${tflops} TFLOP/s"
  else
    row "$1 $2" "FAILED" "unreadable gpu_bench output: $line"
  fi
}
bench forward bf16 bfloat16
bench forward fp32 float32
bench training fp32 float32
bench training tf32 float32

echo
echo "== summary ($(elapsed)); targets on an H100: forward bf16 ≥ 0.6 of cuBLAS, ≥ 2× PyTorch eager"
printf '%s\n' "${rows[@]}" | tee "$results/summary.txt"
