#!/usr/bin/env bash
# The prepared GPU check (issues 6 and 11), for a machine with one GPU and no package
# access. It takes the programs from gpu-bundle.tar.xz (scripts/make-gpu-bundle.sh,
# carried with the tree) or builds them when every dependency is there; then
#   1. runs every `cuda` test: each CUDA op against the CPU op or float64, the layer on
#      the GPU against the CPU (forward in fp32/tf32/bf16, backward, bf16 training, AdamW,
#      checkpoints); those that did not pass, again each alone (rerun_alone);
#   2. runs the multi-rank invariance and traffic tests with two ranks sharing the GPU
#      over MPI (the distributed plan on the GPU, and its bits against the host plan's:
#      ExchangePlan.*), the same tests and the communicator's over NCCL at one rank, and
#      `moe --comm nccl train --device cuda` at one rank;
#   3. times the layer (gpu_bench) against cuBLAS doing the same FLOPs densely, and the
#      PyTorch baselines (bench/torch_gpu_moe.py: sort + torch._grouped_mm, and the loop
#      over experts) at the configs of issue 11, in the same run (MOE_CHECK_PACKED=1: in
#      bf16 also the layer with its experts' rows packed, MOE_EXPERT_ROWS=packed);
#   4. times `moe train --device cuda` (from the stream, labelled a step ahead and inside
#      each step, and from a dataset) against the layer's own training step (gpu_bench
#      --mode step);
#   6. runs compute-sanitizer memcheck, racecheck (in four shards at once, after a kernel
#      that races on purpose shows the tool reports a race) and initcheck on the cuda
#      tests, each run at most 85 s (the shards at once 200 s);
#   5. takes each kernel's time in a mid bf16 training step and a mid and a fine-grained
#      forward with ncu (when there is time), with each kernel's share;
#   7. the trials whose question is still open: the hidden epilogue by element
#      (MOE_HIDDEN_EPILOGUE_BY_ELEMENT) at mid and fine; the bias-gradient sums in the
#      epilogue's backward (MOE_BIAS_GRADIENT_SUMS_IN_EPILOGUE) at mid; the first product's bias and ReLU in
#      cuBLASLt's epilogue (MOE_GEMM_EPILOGUE) at mid, Mixtral-like and fine ffn; a
#      dropless layer's forward_async and CUDA graph at decoding sizes (no wait:
#      kernels/cuda/resident_gemm.cu) against its forward and the static-shape graph;
#      capacity-padded experts against packed ones;
# in that order (what the targets are judged on first, the trials last), and prints a
# table last. It ends near MOE_CHECK_SECONDS (default 345: issue 11 keeps
# the check under 6 minutes; a lease with more time passes more): every command's time
# limit is cut to what is left, and a step that no longer fits is a "not run" row, so
# that a slow or hanging step costs the rows after it, not the summary.
# usage: scripts/gpu-check.sh [RESULTS_DIR]     (default $OUT, else ./gpu-check-results)
#   MOE_CHECK_SECTIONS="1 3 5"  only those sections, in that order (default "1 2 3 4 6 5 7")
#   MOE_CHECK_BENCH=quick       section 3 at three configs
#   MOE_CHECK_PACKED=1          section 3 also times each bf16 row with its experts' rows packed
#   MOE_CHECK_SANITIZERS="…"    which compute-sanitizer tools, in order (default memcheck racecheck initcheck)
#   MOE_RACECHECK_AT_ONCE=0     racecheck's four shards one after another (default: at once)
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:-${OUT:-$PWD/gpu-check-results}}
deadline=${MOE_CHECK_SECONDS:-345}
mkdir -p "$results"
rows=()
row() { rows+=("$(printf '%-44s %-10s %s' "$1" "$2" "$3")"); }
elapsed() { echo "$((SECONDS))s"; }
# A command's time limit: its own, N seconds, or what is left before the deadline if
# that is less (at least 1).
capped() {
  local left=$((deadline - SECONDS))
  echo $((left < $1 ? (left > 1 ? left : 1) : $1))
}
# Whether a step of about N seconds still fits before the deadline; if not, its row
# LABEL says it was not run.   fits N LABEL || return
fits() {
  ((deadline - SECONDS >= $1)) && return 0
  row "$2" "not run" "out of time (MOE_CHECK_SECONDS=$deadline)"
  return 1
}

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
     cmake --build build-gpu -j "$(nproc)" --target moe_cuda_tests moe_mpi_tests gpu_bench gemm_methods moe_dist_bench moe_cli \
       decode_with_cuda_graph racecheck_canary >>"$results/build.log" 2>&1; then
    mkdir -p build-gpu/check-bin
    cp build-gpu/tests/cuda/moe_cuda_tests build-gpu/tests/cuda/racecheck_canary build-gpu/tests/mpi/moe_mpi_tests \
       build-gpu/bench/gpu_bench \
       build-gpu/bench/moe_dist_bench build-gpu/bench/gemm_methods build-gpu/bin/moe \
       build-gpu/examples/decode_with_cuda_graph build-gpu/check-bin/
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

# Every cuda test that did not pass in the run, again in a process of its own. A kernel's
# fault poisons the process's CUDA context, so that every test after it fails with the
# same error (or a crash ends the run), and only a test run alone says whether it
# passes: the row names those that fail alone, each with its log (alone_NAME.log).
rerun_alone() {
  local line suite="" name ok=0 failed_alone=()
  while read -r line; do
    [[ -z $line ]] && continue
    if [[ $line == *. && $line != *" "* ]]; then suite=$line; continue; fi
    [[ -z $suite ]] && continue  # gtest_main's own first line
    name=$suite${line%% *}
    grep -qF "[       OK ] $name " "$results/cuda_tests.log" && continue
    fits 10 "cuda tests alone (from $name on)" || return
    timeout "$(capped 60)" "$bin/moe_cuda_tests" --gtest_filter="$name" >"$results/alone_${name//\//_}.log" 2>&1 &&
      ok=$((ok + 1)) || failed_alone+=("$name")
  done < <(timeout "$(capped 30)" "$bin/moe_cuda_tests" --gtest_list_tests 2>/dev/null)
  row "cuda tests not passed in the run, alone" "$ok pass" \
      "${#failed_alone[@]} fail alone: ${failed_alone[*]:-none} (alone_NAME.log)"
}

section_1() {  # cuda_tests
  echo "== 1. cuda tests (each op against the CPU, the layer on the GPU) $(elapsed)"
  timeout "$(capped 150)" "$bin/moe_cuda_tests" --gtest_output="xml:$results/cuda_tests.xml" >"$results/cuda_tests.log" 2>&1
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
    ((skipped == 0)) && rerun_alone
  fi

  # The CUDA-graph example a user copies (examples/decode_with_cuda_graph.cpp), with
  # static shapes and dropless.
  if [[ -x "$bin/decode_with_cuda_graph" ]]; then
    local how
    for how in "" --dropless; do
      timeout "$(capped 60)" "$bin/decode_with_cuda_graph" $how >"$results/decode_graph$how.log" 2>&1
      status=$?
      row "examples/decode_with_cuda_graph $how" "$([[ $status == 0 ]] && echo pass || echo FAIL)" \
          "exit $status: $(tail -1 "$results/decode_graph$how.log")"
    done
  fi
}

section_2() {  # ranks
  echo "== 2. ranks: two sharing the GPU over MPI; one over NCCL $(elapsed)"
  fits 60 "multi-rank and NCCL" || return
  if command -v mpirun >/dev/null; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    MOE_TEST_DEVICE=cuda timeout "$(capped 150)" \
      mpirun -np 2 --oversubscribe "$bin/moe_mpi_tests" --gtest_filter='*Invariance*:Traffic*:Parameters*:*ExpertBias*:*ExchangePlan*' \
      >"$results/mpi_cuda.log" 2>&1
    status=$?
    tail -2 "$results/mpi_cuda.log"
    verdict=$([[ $status == 0 ]] && echo pass || ([[ $status == 77 ]] && echo "no GPU" || echo FAIL))
    row "invariance at P=2 on one GPU (MPI)" "$verdict" "exit $status (mpi_cuda.log)"
    # The distributed plan on the GPU against the host plan, same run: ms per forward at
    # P = 2 (two ranks on one GPU over MPI, mid shape, bf16, 4096 tokens a rank).
    plan_ms=()
    for plan in host steps; do
      plan_ms+=("$(MOE_EXCHANGE_PLAN=$plan timeout "$(capped 60)" mpirun -np 2 --oversubscribe -x MOE_EXCHANGE_PLAN \
                    "$bin/moe_dist_bench" --device cuda --precision bf16 --tokens 4096 --reps 10 --phases \
                    2>>"$results/dist_bench.log" | tee -a "$results/dist_bench.log" | awk -F, 'NR == 1 {print $5}')")
    done
    row "P=2 on one GPU (MPI), forward ms: host plan / plan steps" "${plan_ms[0]:-?} / ${plan_ms[1]:-?}" \
        "moe_dist_bench, mid bf16, 4096 tok/rank (dist_bench.log has the phases)"
    MOE_TEST_COMM=nccl timeout "$(capped 120)" mpirun -np 1 "$bin/moe_mpi_tests" \
      --gtest_filter='*Invariance*:Traffic*:Parameters*:*ExpertBias*:Communicator*' >"$results/nccl.log" 2>&1
    status=$?
    tail -2 "$results/nccl.log"
    verdict=$([[ $status == 0 ]] && grep -q "over nccl" "$results/nccl.log" && echo pass || echo FAIL)
    row "invariance + communicator at P=1 over NCCL" "$verdict" "exit $status (nccl.log)"
    timeout "$(capped 60)" mpirun -np 1 "$bin/moe" --comm nccl train --device cuda --steps 60 --log-every 20 --tokens 1024 \
      >"$results/nccl_train.log" 2>&1
    status=$?
    tail -2 "$results/nccl_train.log"
    row "moe --comm nccl train --device cuda, P=1" "$([[ $status == 0 ]] && echo pass || echo FAIL)" \
      "exit $status: $(grep -c '^ *[0-9]' "$results/nccl_train.log") log lines (nccl_train.log)"
  else
    row "multi-rank and NCCL" "not run" "no mpirun on this machine"
  fi
}

section_3() {  # timings
  echo "== 3. timings $(elapsed)"
  echo "config,kind,router,mode,precision,E,k,H,F,T,shared,moe_ms,dense_ms,moe_TFLOPs,ratio,one_launch_ms,per_group_ms,torch_grouped_ms,torch_loop_ms,packed_ms" \
    >"$results/bench.csv"
  # bench CONFIG KIND MODES PRECISION: the layer against dense cuBLAS and the PyTorch
  # baselines, a row per mode; with MOE_CHECK_PACKED=1, in bf16 also the layer with its
  # experts' rows packed (MOE_EXPERT_ROWS=packed) against the default padded layout,
  # same run. Off by default since the sixth check: one pair of processes moved by 2-5%
  # either way at these sizes, and three alternated rounds settled the default
  # (docs/performance.md); it took 9 runs of gpu_bench.
  bench() {
    local config=$1 kind=$2 modes=$3 precision=$4
    fits 20 "$config $kind $modes $precision" || return
    local lines line
    lines=$(timeout "$(capped 150)" "$bin/gpu_bench" --config "$config" --kind "$kind" --mode "$modes" --precision "$precision" \
              --reps 10 2>>"$results/bench.log")
    if [[ -z "$lines" ]]; then
      row "$config $kind $modes $precision" "FAILED" "gpu_bench: $(grep gpu_bench "$results/bench.log" | tail -1)"
      return
    fi
    while IFS= read -r line; do
      local c k r mode p E K H F T S moe_ms dense_ms tflops ratio torch packed="-"
      IFS=, read -r c k r mode p E K H F T S moe_ms dense_ms tflops ratio _ <<<"$line"
      local dtype=bfloat16 router_args=()
      [[ $p == bf16 ]] || dtype=float32
      [[ $r == sigmoid ]] && router_args=(--router sigmoid --groups 8 --topk-groups 4)
      torch=$(timeout "$(capped 150)" python3 bench/torch_gpu_moe.py "$E" "$K" "$H" "$F" "$T" --kind "$k" "${router_args[@]}" \
                --shared "$S" --dtype "$dtype" --mode "$mode" --reps 10 2>>"$results/bench.log")
      local grouped=${torch% *} loop=${torch#* }
      if [[ $p == bf16 && ${MOE_CHECK_PACKED:-0} == 1 ]] && ((deadline - SECONDS >= 10)); then
        packed=$(MOE_EXPERT_ROWS=packed timeout "$(capped 90)" "$bin/gpu_bench" --config "$config" --kind "$kind" \
                   --mode "$mode" --precision bf16 --reps 10 --no-dense 2>>"$results/bench.log" | cut -d, -f12)
      fi
      echo "$line,${grouped:--},${loop:--},${packed:--}" >>"$results/bench.csv"
      local vs="-"
      [[ -n "$grouped" && "$grouped" != "-" ]] && vs=$(awk -v t="$grouped" -v m="$moe_ms" 'BEGIN { printf "%.2f", t / m }')
      row "$c $k $mode $p: moe / dense / torch grouped / loop ms" "$moe_ms" \
          "$dense_ms / ${grouped:--} / ${loop:--} → moe/dense ${ratio}, ${vs}× torch grouped, ${tflops} TFLOP/s; packed ${packed:--}"
    done <<<"$lines"
  }
  # The rows issue 11's targets are judged on (scripts/gpu-report.py), the configs
  # furthest from dense first: the check's budget cuts what comes last.
  bench mid ffn forward,training bf16
  bench fine ffn forward bf16
  bench deepseek glu forward bf16
  if [[ ${MOE_CHECK_BENCH:-full} != quick ]]; then  # quick: those three configs only
    bench mixtral glu forward,training bf16
    bench mid glu forward bf16
    bench mixtral ffn forward bf16
    bench fine glu forward bf16
    bench mid ffn forward,training fp32
  fi
}

# The trials: switches whose question the fourth check (2026-11-27) left open, after
# everything the targets are judged on. The trials that check answered are gone from
# here (docs/performance.md has their rows): the plan steps against the host plan,
# the router's products split over K, the per-group GEMMs on 1 or 4 streams or sharing
# the SMs, gemm_methods (bench/gemm_methods.cu still times them), and packed against
# padded (beside every bf16 row of section 3 with MOE_CHECK_PACKED=1).
section_7() {  # trials
  echo "== 7. trials $(elapsed)"
  # Answered and dropped from here after the sixth check (docs/performance.md), with the
  # helper that timed a switch's values side by side: the shared expert late or early (no
  # order won in four rounds of three checks; early stays) and the input biases'
  # gradient sums in the epilogue's backward (no gain; off; asked again below, since
  # a40f641).
  # A switch alternated twice in the same run (a single pair does not settle 2-5%: the
  # sixth check), the layer's bf16 forward unless the flags say another --mode;
  # bench.log's phase lines give each run's phases. VARIABLE may name several, joined by
  # +: all 0, then all 1.
  env_ab() {  # env_ab VARIABLE[+VARIABLE...] CONFIG KIND TOKENS [gpu_bench flags]
    local variable=$1 value ms times=() mode=(--mode forward) name settings
    shift
    local label="$1 $2 T=$3${4:+ ${*:4}} bf16: $variable=0 / 1 ×2 ms"
    [[ " ${*:4} " == *" --mode "* ]] && mode=()  # one mode, one line
    fits 20 "$label" || return
    for value in 0 1 0 1; do
      settings=()
      for name in ${variable//+/ }; do settings+=("$name=$value"); done
      ms=$(env "${settings[@]}" timeout "$(capped 60)" "$bin/gpu_bench" --config "$1" --kind "$2" --tokens "$3" \
             "${mode[@]}" --precision bf16 --no-dense --reps 30 "${@:4}" 2>>"$results/bench.log" | cut -d, -f12)
      times+=("${ms:-FAILED}")
    done
    row "$label" "$(IFS=/; echo "${times[*]}")" "(bench.log has the phases)"
  }
  # The hidden epilogue a thread per 8 elements over every row (MOE_HIDDEN_EPILOGUE_BY_ELEMENT=1;
  # kernels/cuda/environment.cuh) against a block per tile of 4 rows: the seventh
  # check's tiles moved about 2.3 TB/s at mid (62.8 µs of the forward's 376.7), the
  # backward's by-element kernel about 4.4. Mid and fine forwards (the two targets
  # nearest 0.5), glu, and a training step.
  env_ab MOE_HIDDEN_EPILOGUE_BY_ELEMENT mid ffn 4096 --inputs 4
  env_ab MOE_HIDDEN_EPILOGUE_BY_ELEMENT fine ffn 8192 --inputs 4
  env_ab MOE_HIDDEN_EPILOGUE_BY_ELEMENT mid glu 4096 --inputs 4
  env_ab MOE_HIDDEN_EPILOGUE_BY_ELEMENT mid ffn 4096 --inputs 4 --mode training
  # Asked again: the bias-gradient sums in the hidden epilogue's backward
  # (MOE_BIAS_GRADIENT_SUMS_IN_EPILOGUE=1, answered "no gain" after the sixth check).
  # Its kernel adds its lanes in shared memory as the separate sums do, and a40f641
  # (lane_slot, after the seventh check) took a 16-way bank conflict out of both: the
  # fused kernel's 95.7 µs against 64.9 + 26.1 apart may have been the conflict's.
  env_ab MOE_BIAS_GRADIENT_SUMS_IN_EPILOGUE mid ffn 4096 --inputs 4 --mode training
  # The first product's bias and ReLU in cuBLASLt's epilogue (MOE_GEMM_EPILOGUE=1;
  # kernels/cuda/epilogue_gemm.cuh), with the bias in bf16 where cuBLASLt refuses the
  # float32 one (the fourth check's did). Where its probe fails, both values run the
  # hidden epilogue kernel; bench.log has the ops' line saying which. The seventh check
  # found it about 10% faster at mid (8 experts, F = 4096) and 2-3% slower at fine (64
  # experts, F = 1408) in both runs; Mixtral-like ffn (8 experts, F = 14336) is the third
  # point a default would need. Mid first: the mid target (0.49 of dense in the seventh
  # check) is the one it could move.
  # Answered and dropped from here after the seventh check (docs/performance.md): the
  # speculated rows (MOE_SPECULATIVE_ROWS: level or slower in six rows of two runs, off)
  # and the plan in one kernel (MOE_PLAN_IN_ONE_KERNEL: faster or level, the single-rank
  # default since).
  env_ab MOE_GEMM_EPILOGUE mid ffn 4096 --inputs 4
  env_ab MOE_GEMM_EPILOGUE mixtral ffn 8192
  env_ab MOE_GEMM_EPILOGUE fine ffn 8192 --inputs 4
  # A dropless layer without a wait (forward_async on packed experts whose row counts
  # stay on the GPU: kernels/cuda/resident_gemm.cu) and its CUDA graph, against the same
  # layer's forward, which waits for the routing, and against the capacity-padded graph
  # (static shapes, capacity 1.25), at decoding-step sizes, same run. The fourth check
  # found the resident products slower than the forward at every size (0.215 against
  # 0.187 ms at mid T=8, 3.180 against 1.629 at DeepSeek-like T=64).
  dropless_async() {  # dropless_async CONFIG KIND TOKENS
    local dropless static
    fits 15 "$1 $2 T=$3 bf16 dropless: forward / async / graph ms" || return
    dropless=$(timeout "$(capped 90)" "$bin/gpu_bench" --config "$1" --kind "$2" --tokens "$3" --mode forward,async,graph \
                 --precision bf16 --reps 20 2>>"$results/bench.log" | cut -d, -f12 | paste -sd/)
    static=$(timeout "$(capped 90)" "$bin/gpu_bench" --config "$1" --kind "$2" --tokens "$3" --mode graph --precision bf16 \
               --static-shapes --reps 20 2>>"$results/bench.log" | cut -d, -f12)
    row "$1 $2 T=$3 bf16 dropless: forward / async / graph ms" "${dropless:-FAILED}" \
        "static-shape graph (cf 1.25): ${static:-FAILED} (bench.log says why if failed)"
  }
  dropless_async mid ffn 8
  dropless_async deepseek glu 64
  # Capacity-padded experts (--static-shapes) against the packed layout at the same
  # capacity (1.25), same run, at a training-sized batch: their bf16 products now run
  # batched (one row count), where the fourth check ran them per expert (static 0.556 ms
  # against packed 0.506). Padded, also forward_async and its CUDA graph replayed.
  static_ab() {  # static_ab CONFIG KIND TOKENS
    local packed static
    fits 15 "$1 $2 T=$3 bf16 cf 1.25: packed forward ms" || return
    packed=$(MOE_EXPERT_ROWS=packed timeout "$(capped 90)" "$bin/gpu_bench" --config "$1" --kind "$2" --tokens "$3" \
               --mode forward --precision bf16 --capacity-factor 1.25 --reps 20 2>>"$results/bench.log" | cut -d, -f12)
    static=$(timeout "$(capped 90)" "$bin/gpu_bench" --config "$1" --kind "$2" --tokens "$3" --mode forward,async,graph \
               --precision bf16 --static-shapes --reps 20 2>>"$results/bench.log" | cut -d, -f12 | paste -sd/)
    row "$1 $2 T=$3 bf16 cf 1.25: packed forward ms" "${packed:-FAILED}" \
        "static forward / async / graph replay: ${static:-FAILED} (bench.log says why if failed)"
  }
  static_ab mid ffn 4096
}

section_4() {  # training_job
  echo "== 4. the training job against the layer $(elapsed)"
  fits 90 "moe train --device cuda against the layer's step" || return
  # moe train at the mid shape with 8192 tokens a step, bf16, dropless; tokens/s of its
  # second logged window against the layer's own training step (gpu_bench --mode step:
  # forward, backward, clipping, AdamW) at the same shape. Three jobs: from the stream,
  # whose teacher labels the next step's batch on a thread of its own while the student
  # trains (the default on a GPU at one rank); the same with the student's streams at the
  # GPU's greatest priority (MOE_STUDENT_HIGH_PRIORITY=1, a trial: shown, not judged), so
  # that the teacher's kernels run where the student leaves the GPU idle rather than in
  # its way; and from a dataset labelled once (--dataset-batches 4), whose step is the
  # student's alone. Issue 11's target: the job at >= 0.8 of the step. (The stream
  # labelled inside each step, --label-ahead off, ran here until the seventh check:
  # 0.68 of the step against 0.69 labelled ahead.)
  train_job() {  # name, extra flags
    local name=$1
    shift
    timeout "$(capped 120)" "$bin/moe" train --device cuda --precision bf16 --experts 8 --top-k 2 --hidden 1024 --expert-dim 4096 \
      --tokens 8192 --dropless --steps 40 --log-every 20 "$@" >"$results/train_$name.log" 2>&1
    awk '$1 == 40 && NF == 7 {print $5}' "$results/train_$name.log"
  }
  job_stream=$(train_job stream)
  job_stream_high_priority=$(MOE_STUDENT_HIGH_PRIORITY=1 train_job stream-high-priority)
  job_dataset=$(train_job dataset --dataset-batches 4)
  # A stream's priority changes no bit, so the two stream jobs log the same losses
  # (step, loss, aux, z).
  losses() { awk '$1 ~ /^[0-9]+$/ && NF == 7 {print $1, $2, $3, $4}' "$results/train_$1.log"; }
  if [[ -n "$(losses stream)" && "$(losses stream)" == "$(losses stream-high-priority)" ]]; then
    row "moe train: the student at high priority = not" "pass" \
        "the same losses at steps $(losses stream | awk '{printf "%s ", $1}')"
  else
    row "moe train: the student at high priority = not" "FAIL" \
        "losses differ or missing (train_stream.log, train_stream-high-priority.log)"
  fi
  # teacher_step: the step after a teacher's forward on its batch, timed as one, as the
  # stream job in the step runs them (the seventh check saw the student's expert kernels
  # about 0.5 ms slower after the teacher's forward in the job).
  layer=$(timeout "$(capped 90)" "$bin/gpu_bench" --config mid --tokens 8192 --mode step,forward,teacher_step \
            --precision bf16 --reps 10 2>>"$results/bench.log")
  step_ms=$(awk -F, '$4 == "step" {print $12}' <<<"$layer")
  forward_ms=$(awk -F, '$4 == "forward" {print $12}' <<<"$layer")
  teacher_step_ms=$(awk -F, '$4 == "teacher_step" {print $12}' <<<"$layer")
  if [[ -n "$step_ms" && -n "$forward_ms" ]]; then
    step_tps=$(awk -v ms="$step_ms" 'BEGIN { printf "%.0f", 8192 / ms * 1000 }')
    with_teacher_tps=$(awk -v s="$step_ms" -v f="$forward_ms" 'BEGIN { printf "%.0f", 8192 / (s + f) * 1000 }')
    ratio() { awk -v j="$1" -v l="$2" 'BEGIN { printf "%.2f", j / l }'; }
    for name in stream stream-high-priority dataset; do
      job=job_${name//-/_}
      if [[ -n "${!job}" ]]; then
        row "moe train --device cuda bf16, mid, 8192 tok, $name" "${!job}" \
            "tokens/s; layer step $step_tps tokens/s → job/step $(ratio "${!job}" "$step_tps"); step + teacher forward $with_teacher_tps → $(ratio "${!job}" "$with_teacher_tps")"
      else
        row "moe train --device cuda bf16, $name" "FAILED" "train_$name.log: $(tail -1 "$results/train_$name.log")"
      fi
    done
    row "gpu_bench ms, mid 8192 tok: teacher_step / step + forward" \
        "${teacher_step_ms:-FAILED} / $(awk -v s="$step_ms" -v f="$forward_ms" 'BEGIN { printf "%.3f", s + f }')" \
        "the teacher's forward and the step timed as one, against apart (bench.log has both's phases)"
  else
    row "gpu_bench --mode step,forward (mid, 8192 tok)" "FAILED" "bench.log: $(tail -1 "$results/bench.log")"
  fi
  # Where the stream's step goes. Three looks at it: the jobs' wall parts (train_*.log:
  # draw, label, forward, loss, backward, optimizer, on the host's clock); the layer's
  # step on a new batch every step (--inputs 16) beside the same batch each step
  # (above), for a cost that follows the routing; and, where the machine has nsys, the
  # stream job in the step under it (nsys_stream.txt: the CUDA API calls and kernels,
  # summed). The seventh check's second run (2026-11-28): in the step, the stream spent
  # 4.68 ms a step against the dataset's 3.09: drawing 0.25, the teacher 0.97, and the
  # student's forward and backward 0.36 more, its expert kernels about 0.5 ms slower
  # after the teacher's forward on the GPU's clock; a new batch each step cost 3.260 ms
  # against 3.162; that machine had no nsys.
  if fits 20 "gpu_bench --mode step --inputs 16 (mid, 8192 tok)"; then
    local fresh
    fresh=$(timeout "$(capped 60)" "$bin/gpu_bench" --config mid --tokens 8192 --mode step --inputs 16 --precision bf16 \
              --reps 10 2>>"$results/bench.log" | awk -F, '$4 == "step" {print $12}')
    row "gpu_bench step ms, mid 8192 tok: same batch / new" "${step_ms:-?} / ${fresh:-FAILED}" \
        "a new batch each step (--inputs 16) against the same one (bench.log has the phases)"
  fi
  local nsys
  nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
  if [[ -z "$nsys" ]]; then
    row "nsys on the stream job" "not run" "no nsys on this machine"
  elif fits 60 "nsys on the stream job"; then
    timeout "$(capped 60)" "$nsys" profile --output "$results/stream" --force-overwrite true --trace cuda \
      "$bin/moe" train --device cuda --precision bf16 --experts 8 --top-k 2 --hidden 1024 --expert-dim 4096 \
      --tokens 8192 --dropless --steps 40 --log-every 20 --label-ahead off >"$results/nsys_stream.log" 2>&1 &&
      timeout "$(capped 60)" "$nsys" stats --report cuda_api_sum --report cuda_gpu_kern_sum \
        "$results/stream.nsys-rep" >"$results/nsys_stream.txt" 2>&1
    row "nsys on the stream job" "exit $?" "nsys_stream.txt (the CUDA API calls and kernels of 40 steps, summed)"
    rm -f "$results/stream.nsys-rep" "$results/stream.sqlite"
  fi
}

section_5() {  # kernel_times
  echo "== 5. kernel times of a mid and a fine forward and a mid training step (ncu) $(elapsed)"
  # Where a forward's time goes, kernel by kernel (one pass per kernel: the duration
  # metric alone), at the two configs furthest from dense, and where a bf16 training
  # step's goes at mid (issue 11: no reduction over 2% of a forward or backward); in
  # ncu_NAME.csv. Each covers ten passes (three warm-ups, two timed, five for the
  # phases), without the dense baseline (--no-dense); scripts/ncu-per-forward.py sums
  # each kernel's invocations × average over the ten into ncu_NAME.txt, printed here
  # too. The clocks run free (--clock-control none), as in the bench: locked at base
  # clocks (ncu's default, checks 1–3) the GEMMs took longer than in the bench's own
  # runs. The mid training step first: its bias-gradient sums are the one reduction
  # over 2% (checks 5 and 6). Each profile took 5–10 s in check 6, where a guard of
  # 120 s left the step unprofiled.
  local profile config mode name
  for profile in mid:training mid:forward fine:forward; do
    config=${profile%%:*} mode=${profile##*:}
    name=$config$([[ $mode == forward ]] || echo "_$mode")
    if command -v ncu >/dev/null && fits 30 "ncu kernel times ($config ffn $mode)"; then
      timeout "$(capped 60)" ncu --metrics gpu__time_duration.sum --clock-control none --print-summary per-kernel --csv \
        "$bin/gpu_bench" --config "$config" --kind ffn --mode "$mode" --precision bf16 --reps 2 --no-dense \
        >"$results/ncu_$name.csv" 2>"$results/ncu_$name.log"
      row "ncu kernel times ($config ffn $mode)" "exit $?" "ncu_$name.csv; per pass: ncu_$name.txt"
      python3 scripts/ncu-per-forward.py "$results/ncu_$name.csv" --pass "$([[ $mode == forward ]] && echo forward || echo "training step")" \
        >"$results/ncu_$name.txt" 2>&1
      sed "s/^/  /" "$results/ncu_$name.txt"
    fi
  done
}

section_6() {  # sanitizers
  echo "== 6. compute-sanitizer on the cuda tests $(elapsed)"
  sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
  # run_sanitizer TOOL FILTER LOG LIMIT [SHARD TOTAL]: the tool on the cuda tests that
  # FILTER selects (with SHARD and TOTAL, gtest's shard SHARD of TOTAL of them), at most
  # LIMIT seconds; the log gets the output, LOG.status the exit status and the seconds
  # taken. It makes no row, so that several can run at once in the background.
  run_sanitizer() {
    local tool=$1 filter=$2 log=$3 limit=$4 shard=${5:-0} total=${6:-1} start=$SECONDS
    # --nvtx: the library marks what cuBLAS writes as initialised (kernels/cuda/gemm.cu).
    GTEST_SHARD_INDEX=$shard GTEST_TOTAL_SHARDS=$total timeout "$limit" "$sanitizer" --tool "$tool" --nvtx true \
      --print-limit 20 "$bin/moe_cuda_tests" --gtest_filter="$filter" \
      >"$results/$log" 2>&1
    echo "$? $((SECONDS - start))" >"$results/$log.status"
  }
  # judge LOG LABEL: the row of a run_sanitizer run. The verdict is the tool's own count
  # of errors.
  judge() {
    local log=$1 label=$2 status seconds summary errors verdict
    read -r status seconds <"$results/$log.status"
    rm -f "$results/$log.status"
    tail -2 "$results/$log"
    summary=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$results/$log" | tail -1 | sed 's/^========= //')
    errors=$(sed -nE 's/.*ERROR SUMMARY: ([0-9]+) error.*/\1/p; s/.*RACECHECK SUMMARY: .*\(([0-9]+) error.*/\1/p' \
               <<<"$summary")
    # The tool's own failure counts in its summary as an error, not a hazard of ours.
    grep -q "Internal Sanitizer Error" "$results/$log" && summary="the tool failed (Internal Sanitizer Error); $summary"
    if [[ $status == 124 ]]; then verdict=timeout
    elif grep -q "Running 0 tests" "$results/$log"; then  # a shard of a short filter may get none
      row "$label" "none" "no test in this shard ($log)"
      return
    elif [[ "${errors:-x}" == 0 ]]; then verdict=pass
    else verdict=FAIL
    fi
    row "$label" "$verdict" "${summary:-no summary}, tests exit $status in ${seconds} s ($log)"
  }
  # sanitize TOOL FILTER LOG LABEL: one run, at most 85 s, and its row.
  sanitize() {
    fits 20 "$4" || return
    run_sanitizer "$1" "$2" "$3" "$(capped 85)"
    judge "$3" "$4"
  }
  # A zero from racecheck means something only if the tool sees a race where there is
  # one: tests/cuda/racecheck_canary.cu races on purpose, and racecheck runs on it first.
  # (The check of 2026-11-28 told racecheck to instrument only our kernels, --kernel-name
  # kns=moe7kernels4cuda, once the canary showed the filter reached them: every shard
  # then ended in "Internal Sanitizer Error: The Sanitizer failed to handle a hardware
  # exception" in a cuBLAS call, whose kernels it left uninstrumented, and the tests
  # after it did not run. So racecheck instruments every kernel again.)
  racecheck_sees_races() {
    fits 20 "racecheck on a race (the canary)" || return
    timeout "$(capped 30)" "$sanitizer" --tool racecheck "$bin/racecheck_canary" >"$results/racecheck_canary.log" 2>&1
    local hazards
    hazards=$(sed -nE 's/.*RACECHECK SUMMARY: ([0-9]+) hazard.*/\1/p' "$results/racecheck_canary.log" | tail -1)
    if [[ "${hazards:-0}" -gt 0 ]]; then
      row "racecheck on a race (the canary)" "seen" "$hazards hazards reported (racecheck_canary.log)"
    else
      row "racecheck on a race (the canary)" "FAIL" "no hazard reported: racecheck's zeros below prove nothing \
(racecheck_canary.log)"
    fi
  }
  for tool in ${MOE_CHECK_SANITIZERS:-memcheck racecheck initcheck}; do
    if [[ -z "$sanitizer" ]]; then
      row "compute-sanitizer $tool" "not run" "no compute-sanitizer"
      continue
    fi
    if [[ $tool == initcheck ]]; then
      # First alone: a kernel of ours reading a fresh C that a bf16 cuBLAS GEMM wrote (the
      # test checks the values). Before gemm.cu marked cuBLAS's outputs written through
      # NVTX, initcheck reported every element of that C (2026-11-27); a report here now
      # means the marks do not reach the tool.
      sanitize initcheck CudaOps.Bf16ExpertGemmWritesAllOfAFreshC initcheck_cublas.log \
        "compute-sanitizer initcheck (bf16 cuBLAS C)"
    fi
    # racecheck checks shared memory, which only our kernels use: their own tests (CudaOps.*)
    # run every one of them; the layer tests add minutes under the tool and no kernel
    # those tests do not run. CudaOps.* took about 185 s under racecheck (2026-11-27, in
    # three runs by hand: 0 hazards; 176 s in the sixth check), more than one run's 85 s,
    # so it runs as four gtest shards, a row each (tests/scripts/test-gpu-check-sanitizers.sh
    # runs this section with stand-ins for the tool and the tests).
    filter=${MOE_SANITIZER_FILTER:-$([[ $tool == racecheck ]] && echo 'CudaOps.*' || echo '*')}
    local label="compute-sanitizer $tool ($([[ $filter == '*' ]] && echo cuda tests || echo "$filter"))"
    if [[ $tool == racecheck ]]; then
      racecheck_sees_races
      # The shards run at once (MOE_RACECHECK_AT_ONCE=0: one after another, at most 85 s
      # each, as up to the seventh check, where they took 37-49 s each: 170 s of the
      # check's 430). Their tests' shapes are small (0.5-5 s each without the tool). If
      # the time under racecheck is the tool's own work on the host per launch, four at
      # once take about the longest shard; if it is the GPU's, about the four together.
      # Which one is unmeasured until a check runs it: each row gives its seconds.
      local shard shards=4
      if [[ ${MOE_RACECHECK_AT_ONCE:-1} != 0 ]]; then
        if fits 60 "${label%)}, $shards shards at once)"; then
          local limit
          limit=$(capped 200)
          local pids=()
          for ((shard = 0; shard < shards; ++shard)); do
            run_sanitizer "$tool" "$filter" "${tool}_$shard.log" "$limit" "$shard" "$shards" &
            pids+=($!)
          done
          wait "${pids[@]}"
          for ((shard = 0; shard < shards; ++shard)); do
            judge "${tool}_$shard.log" "${label%)}, shard $((shard + 1))/$shards)"
          done
        fi
      else
        for ((shard = 0; shard < shards; ++shard)); do
          fits 20 "${label%)}, shard $((shard + 1))/$shards)" || break
          run_sanitizer "$tool" "$filter" "${tool}_$shard.log" "$(capped 85)" "$shard" "$shards"
          judge "${tool}_$shard.log" "${label%)}, shard $((shard + 1))/$shards)"
        done
      fi
    else
      sanitize "$tool" "$filter" "$tool.log" "$label"
    fi
  done
}

# MOE_CHECK_SECTIONS picks sections and their order (default all, the trials last:
# "1 2 3 4 6 5 7"), for a short lease.
for section in ${MOE_CHECK_SECTIONS:-1 2 3 4 6 5 7}; do
  "section_$section"
done

echo
echo "== summary ($(elapsed)); targets (issue 11): bf16 forward ≥ 0.75 of dense at mixtral glu, ≥ 0.5 at mid,"
echo "   fine and deepseek, ≥ 1.3× PyTorch grouped everywhere; bf16 training ≥ 0.6 of dense at mixtral glu"
printf '%s\n' "${rows[@]}" | tee "$results/summary.txt"
# The tables for docs/performance.md, with each of issue 11's targets judged from the
# figures above (report.md): the card, the date, and the commit the programs were built
# from (the bundle's COMMIT; a build here has no record of it).
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
python3 scripts/gpu-report.py "$results" --card "${card:-a card nvidia-smi did not name}" \
  --date "$(date -u +%F)" --commit "$(cat "$bin/../COMMIT" 2>/dev/null || echo 'not recorded')" \
  >"$results/report.md" 2>&1 && echo && cat "$results/report.md"
