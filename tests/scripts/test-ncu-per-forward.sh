#!/usr/bin/env bash
# scripts/ncu-per-forward.py on a small ncu per-kernel summary with known sums: ten
# forwards; the set-up kernel left out; the GEMM kernels summed on one line; ns with
# thousands separators; the kernels by time per forward, largest first, with their
# shares; the total; the largest reduction's share.
set -euo pipefail
python=${1:-python3}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/ncu.csv" <<'CSV'
==PROF== Connected to process 1 (gpu_bench)
mid,ffn,softmax,forward,bf16,8,2,1024,4096,4096,0,0.700,-,190.0,-,-,-
"ID","Process Name","Host Name","Kernel Name","Block Size","Grid Size","Device","CC","Invocations","Section Name","Metric Name","Metric Unit","Minimum","Maximum","Average"
"1","gpu_bench","h","<unnamed>::fill_kernel(float *, unsigned long)","(256, 1, 1)","(1024, 1, 1)","0","9.0","7","s","gpu__time_duration.sum","ns","1.00","9.00","100,000.00"
"1","gpu_bench","h","nvjet_sm90_tst_128x128_64x6_1x2_h_bz_NNT","(384, 1, 1)","(132, 1, 1)","0","9.0","160","s","gpu__time_duration.sum","ns","1.00","9.00","12,500.00"
"1","gpu_bench","h","sm80_xmma_gemm_f32f32_f32f32_f32_nn_n","(128, 1, 1)","(64, 1, 1)","0","9.0","10","s","gpu__time_duration.sum","ns","1.00","9.00","20,000.00"
"1","gpu_bench","h","void moe::<unnamed>::expert_hidden_kernel<8, false>(const __nv_bfloat16 *, long)","(192, 1, 1)","(2048, 1, 1)","0","9.0","10","s","gpu__time_duration.sum","ns","1.00","9.00","45,000.00"
"1","gpu_bench","h","void moe::<unnamed>::step_kernel<plan::AdmitAll>(plan::PlanArrays, long, T1)","(256, 1, 1)","(32, 1, 1)","0","9.0","10","s","gpu__time_duration.sum","ns","1.00","9.00","3,000.00"
"1","gpu_bench","h","moe::<unnamed>::route_lanes_kernel<1>(const float *, long)","(256, 1, 1)","(512, 1, 1)","0","9.0","10","s","gpu__time_duration.sum","ns","1.00","9.00","6,500.00"
"1","gpu_bench","h","void moe::<unnamed>::table_chunk_sums_kernel<float>(const float *, long)","(32, 8, 1)","(32, 4, 1)","0","9.0","10","s","gpu__time_duration.sum","ns","1.00","9.00","4,000.00"
"1","gpu_bench","h","void moe::<unnamed>::finish_grouped_column_sums_kernel(const double *, long)","(256, 1, 1)","(4, 1, 1)","0","9.0","10","s","gpu__time_duration.sum","ns","1.00","9.00","1,500.00"
CSV
out=$("$python" "$(dirname "$0")/../../scripts/ncu-per-forward.py" "$dir/ncu.csv" --forwards 10 --top 2)
echo "$out"
expect() {  # expect LINE_NUMBER PATTERN
  sed -n "${1}p" <<<"$out" | grep -Eq "$2" || { echo "line $1 should match: $2" >&2; exit 1; }
}
expect 2 '^ +220\.0 +17\.0  78\.6%  cuBLAS products'   # (160·12.5 + 10·20) µs / 10; 17 launches; of 280
expect 3 '^ +45\.0 +1\.0  16\.1%  expert_hidden_kernel<8, false>$'
expect 4 '^ +6\.5 +1\.0   2\.3%  route_lanes_kernel<1>$'
expect 5 '^ +8\.5 +3\.0   3\.0%  3 others$'
expect 6 '^ +280\.0 +every kernel$'                # fill_kernel left out
expect 7 '^largest reduction: table_chunk_sums_kernel<float> 1\.4% of every kernel'
if grep -q fill_kernel <<<"$out"; then echo "the set-up kernel was counted" >&2; exit 1; fi
# A training step's profile: the same sums, its unit in the header.
# (Read whole, then its first line: `| head -1` under pipefail failed when the script
# died of the closed pipe.)
step=$("$python" "$(dirname "$0")/../../scripts/ncu-per-forward.py" "$dir/ncu.csv" --pass "training step")
sed -n 1p <<<"$step" | grep -q "µs/training_step.*(10 training steps;" ||
  { echo "--pass did not name the unit" >&2; exit 1; }
echo "ncu-per-forward: ok"
