#!/usr/bin/env bash
# scripts/gpu-report.py on a made-up GPU check's results with known verdicts: a target
# met, one not met, one with no figure, a row without its PyTorch figure, the training
# job's ratios from the summary, the tests rerun alone, the largest reduction of each
# ncu profile, each sanitizer's verdict (pass, FAIL, and initcheck passed on one test
# but not run over all), section 7's alternated switches (faster in both pairs, the
# pairs disagreeing, and a run that failed), and the notes taken from bench.log.
set -euo pipefail
python=${1:-python3}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/bench.csv" <<'CSV'
config,kind,router,mode,precision,E,k,H,F,T,shared,moe_ms,dense_ms,moe_TFLOPs,ratio,one_launch_ms,per_group_ms,torch_grouped_ms,torch_loop_ms,packed_ms
mid,ffn,softmax,forward,bf16,8,2,1024,4096,4096,0,0.700,0.221,196.3,0.316,-,-,1.082,3.220,0.750
mid,ffn,softmax,training,bf16,8,2,1024,4096,4096,0,2.118,0.634,195.0,0.299,-,-,2.699,9.044
mid,glu,softmax,forward,bf16,8,2,1024,4096,4096,0,0.400,0.313,300.0,0.783,-,-,0.700,3.001,0.380
mixtral,glu,softmax,forward,bf16,8,2,4096,14336,8192,0,9.750,8.553,800.0,0.877,-,-,11.197,10.929
mixtral,glu,softmax,training,bf16,8,2,4096,14336,8192,0,34.957,26.826,700.0,0.767,-,-,31.911,51.819
fine,ffn,softmax,forward,bf16,64,8,2048,1408,8192,0,3.290,1.114,300.0,0.339,-,-,-,11.769
mid,ffn,softmax,forward,fp32,8,2,1024,4096,4096,0,3.880,2.766,50.0,0.713,-,-,4.163,4.505
CSV
cat >"$dir/summary.txt" <<'TXT'
programs                                     bundle     gpu-bundle.tar.xz (built elsewhere for sm_90)
cuda tests (ops + layer, P=1)                FAIL       exit 1: 29 ok, 2 failed, 0 skipped
cuda tests not passed in the run, alone      1 pass     1 fail alone: CudaOps.FailsAlone (alone_NAME.log)
moe train --device cuda bf16, mid, 8192 tok, stream 599591 tokens/s; layer step 730515 tokens/s → job/step 0.82; step + teacher forward 500000 → 1.20
moe train --device cuda bf16, mid, 8192 tok, stream-in-step 450000 tokens/s; layer step 730515 tokens/s → job/step 0.62; step + teacher forward 500000 → 0.90
moe train --device cuda bf16, mid, 8192 tok, stream-high-priority 620000 tokens/s; layer step 730515 tokens/s → job/step 0.85; step + teacher forward 500000 → 1.24
moe train --device cuda bf16, mid, 8192 tok, dataset 950432 tokens/s; layer step 730515 tokens/s → job/step 1.30; step + teacher forward 500000 → 1.90
compute-sanitizer memcheck (cuda tests, shard 1/2) pass       ERROR SUMMARY: 0 errors, tests exit 0 (memcheck_0.log)
compute-sanitizer memcheck (cuda tests, shard 2/2) none       no test in this shard (memcheck_1.log)
compute-sanitizer racecheck (CudaOps.*)      FAIL       RACECHECK SUMMARY: 2 hazards displayed (1 error, 1 warning), tests exit 0 (racecheck.log)
compute-sanitizer initcheck (bf16 cuBLAS C)  pass       ERROR SUMMARY: 0 errors, tests exit 0 (initcheck_cublas.log)
compute-sanitizer initcheck (cuda tests)     not run    out of time (MOE_CHECK_SECONDS=345)
mid ffn T=4096 bf16: MOE_PLAN_IN_ONE_KERNEL=0 / 1 ×2 ms 0.500/0.480/0.520/0.490 (bench.log has the phases)
mid ffn T=4096 --inputs 4 bf16: MOE_SPECULATIVE_ROWS=0 / 1 ×2 ms 0.500/0.510/0.520/0.490 (bench.log has the phases)
fine ffn T=8192 --inputs 4 bf16: MOE_SPECULATIVE_ROWS=0 / 1 ×2 ms 1.900/FAILED/1.880/1.700 (bench.log has the phases)
mid ffn T=4096 --inputs 4 bf16: MOE_SPECULATIVE_ROWS+MOE_GEMM_EPILOGUE=0 / 1 ×2 ms 0.500/0.400/0.520/0.420 (bench.log has the phases)
TXT
# gpu_bench's stderr: the epilogue's notice twice, a failure once, and the speculation
# counts of two runs of one label and one of another.
cat >"$dir/bench.log" <<'LOG'
moe: MOE_GEMM_EPILOGUE=1: the experts' first product adds the bias and applies ReLU in cuBLASLt's epilogue (its bias rounded to bf16)
gpu_bench phases mid ffn forward bf16 (ms per step): forward route 0.100 experts 0.300 | load max/mean 1.07 | speculated rows in the timed steps: 30 held, 0 missed
moe: MOE_GEMM_EPILOGUE=1: the experts' first product adds the bias and applies ReLU in cuBLASLt's epilogue (its bias rounded to bf16)
gpu_bench phases mid ffn forward bf16 (ms per step): forward route 0.100 experts 0.300 | load max/mean 1.07 | speculated rows in the timed steps: 28 held, 2 missed
gpu_bench phases fine ffn forward bf16 (ms per step): forward route 0.300 experts 1.300 | speculated rows in the timed steps: 30 held, 0 missed
gpu_bench phases mid ffn forward bf16 (ms per step): forward route 0.100 experts 0.300 | load max/mean 1.07
moe: cudaFree failed
LOG
# Section 5's ncu summaries: the mid forward and training step, not the fine forward.
printf '%s\n' '     5.2      1.0   1.4%  column_chunk_sums_kernel' \
  'largest reduction: column_chunk_sums_kernel 1.4% of every kernel (issue 11: at most 2%)' >"$dir/ncu_mid.txt"
printf '%s\n' 'largest reduction: table_chunk_sums_kernel<__nv_bfloat16> 1.6% of every kernel (issue 11: at most 2%)' \
  >"$dir/ncu_mid_training.txt"
report() { "$python" "$(dirname "$0")/../../scripts/gpu-report.py" "$dir" --card "NVIDIA H200" --date 2026-11-28 --commit abc1234; }
out=$(report)
echo "$out"
expect() {  # expect PATTERN: some line of the report matches it
  grep -Eq -- "$1" <<<"$out" || { echo "no line matches: $1" >&2; exit 1; }
}
expect '^GPU check on NVIDIA H200, 2026-11-28, code abc1234'
expect '^`cuda` tests: FAIL \(exit 1: 29 ok, 2 failed, 0 skipped\)\.$'
expect '^Rerun alone, the tests that did not pass in the run: 1 pass, 1 fail alone: CudaOps\.FailsAlone \(alone_NAME\.log\)\.$'
expect '^\| mid \| ffn \| forward \| bf16 \| 4096 \| 0\.700 \| 0\.221 \| 0\.32 \| 1\.082 \| 1\.55× \| 3\.220 \| 0\.750 \|$'
# Two rows timed packed too: mid ffn faster by default (0.700 against 0.750), mid glu slower.
expect '^The default layout against packed \(`MOE_EXPERT_ROWS=packed`\): faster at 1 of 2 rows; slower at mid glu forward \(0\.400 against 0\.380\)\.$'
expect '^\| fine \| ffn \| forward \| bf16 \| 8192 \| 3\.290 \| 1\.114 \| 0\.34 \| – \| – \| 11\.769 \| – \|$'
expect '^\| Mixtral-like glu bf16 forward ≥ 0\.75 of dense \| glu 0\.88 \| met \|$'
expect '^\| mid bf16 forward ≥ 0\.5 of dense \| ffn 0\.32, glu 0\.78 \| not met \|$'
expect '^\| DeepSeek-like bf16 forward ≥ 0\.5 of dense \| – \| not measured \|$'
# fine ffn has no PyTorch figure; mid ffn 1.55× and Mixtral-like 1.15× miss 1.3×, mid glu 1.75× meets it.
expect '^\| bf16 forward ≥ 1\.3× PyTorch grouped at every config \| mid ffn 1\.55×, mid glu 1\.75×, Mixtral-like glu 1\.15×; 1 row\(s\) without a PyTorch figure \| not met \(rows missing\) \|$'
expect '^\| Mixtral-like glu bf16 forward \+ backward ≥ 0\.6 of dense \| 0\.77 \| met \|$'
# The stream labelled in the step (--label-ahead off) and the student at high priority
# (a trial) are shown, not judged.
expect '^\| GPU training job ≥ 0\.8 of the layer.s step \(mid, 8 192 tokens\) \| stream 0\.82, dataset 1\.30 \(stream-in-step 0\.62, not judged\) \(stream-high-priority 0\.85, not judged\) \| met \|$'
# Both profiled passes within 2%, the fine forward not profiled: no verdict yet.
expect '^\| no reduction over 2\.0% of a forward or a training step.s kernels \(ncu\) \| mid forward: column_chunk_sums_kernel 1\.4%, mid training step: table_chunk_sums_kernel<__nv_bfloat16> 1\.6% \| not measured \(passed where run; no fine forward\) \|$'
# A shard the filter left without a test counts neither way.
expect '^\| compute-sanitizer memcheck: 0 errors \| compute-sanitizer memcheck \(cuda tests, shard 1/2\): pass \(ERROR SUMMARY: 0 errors\); compute-sanitizer memcheck \(cuda tests, shard 2/2\): none \(no test in this shard \(memcheck_1\.log\)\) \| met \|$'
expect '^\| compute-sanitizer racecheck: 0 errors \| compute-sanitizer racecheck \(CudaOps\.\*\): FAIL \(RACECHECK SUMMARY: 2 hazards displayed \(1 error, 1 warning\)\) \| not met \|$'
# initcheck passed on the cuBLAS test alone and did not run over the cuda tests: not measured.
expect '^\| compute-sanitizer initcheck: 0 errors \| compute-sanitizer initcheck \(bf16 cuBLAS C\): pass \(ERROR SUMMARY: 0 errors\); compute-sanitizer initcheck \(cuda tests\): not run \(out of time \(MOE_CHECK_SECONDS=345\)\) \| not measured \(passed where run\) \|$'
# Section 7's switches: on faster in both pairs (means 0.510 and 0.485); the pairs
# disagreeing; a failed run, no means.
expect '^\| mid ffn T=4096 \| MOE_PLAN_IN_ONE_KERNEL \| 0\.500/0\.480/0\.520/0\.490 \| 0\.510 \| 0\.485 \| 0\.951 \| on faster in both pairs \|$'
expect '^\| mid ffn T=4096 --inputs 4 \| MOE_SPECULATIVE_ROWS \| .* \| level: the pairs disagree \|$'
expect '^\| fine ffn T=8192 --inputs 4 \| MOE_SPECULATIVE_ROWS \| 1\.900/FAILED/1\.880/1\.700 \| – \| – \| – \| not measured \|$'
expect '^\| mid ffn T=4096 --inputs 4 \| MOE_SPECULATIVE_ROWS\+MOE_GEMM_EPILOGUE \| .* \| 0\.510 \| 0\.410 \| 0\.804 \| on faster in both pairs \|$'
# bench.log: each library line once, with its count; speculation summed per label.
expect "^- moe: MOE_GEMM_EPILOGUE=1: the experts' first product .* \\(its bias rounded to bf16\\) \\(×2\\)\$"
expect '^- moe: cudaFree failed$'
expect '^- speculated rows, mid ffn forward bf16: 58 held, 2 missed \(timed steps, every run\)$'
expect '^- speculated rows, fine ffn forward bf16: 30 held, 0 missed \(timed steps, every run\)$'
# All three profiled, one over 2%: not met.
echo 'largest reduction: column_chunk_sums_kernel 2.3% of every kernel (issue 11: at most 2%)' >"$dir/ncu_fine.txt"
out=$(report)
expect '^\| no reduction over 2\.0% .*fine forward: column_chunk_sums_kernel 2\.3%.* \| not met \|$'
# racecheck's zeros count once the canary's race was reported; a check without the
# canary's row (before 2026-11-28) is judged on the zeros alone.
sed -i '/^compute-sanitizer racecheck/d' "$dir/summary.txt"
echo 'compute-sanitizer racecheck (CudaOps.*, shard 1/4) pass       RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings), tests exit 0 (racecheck_0.log)' >>"$dir/summary.txt"
out=$(report)
expect '^\| compute-sanitizer racecheck: 0 errors \| .*shard 1/4\): pass .* \| met \|$'
echo 'racecheck on a race (the canary)             FAIL       no hazard reported (racecheck_canary.log)' >>"$dir/summary.txt"
out=$(report)
expect "^\\| compute-sanitizer racecheck: 0 errors \\| .* \\| not measured \\(the canary's race was not reported\\) \\|\$"
sed -i 's/^racecheck on a race (the canary)             FAIL .*/racecheck on a race (the canary)             seen       1 hazards reported/' "$dir/summary.txt"
out=$(report)
expect '^\| compute-sanitizer racecheck: 0 errors \| .*shard 1/4\): pass .* \| met \|$'
# No results at all is an error, not an empty report.
if "$python" "$(dirname "$0")/../../scripts/gpu-report.py" "$dir/absent" 2>/dev/null; then
  echo "a results directory without results gave a report" >&2
  exit 1
fi
echo "gpu-report: ok"
