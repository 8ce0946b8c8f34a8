#!/usr/bin/env bash
# Weak scaling of the expert-parallel forward (issue 3) at the mid config (E=8, k=2,
# H=1024, F=4096), all figures from this one run:
#  1. 1, 2 and 4 ranks with 1 thread each and a fixed number of tokens per rank, in
#     both traffic modes: ms per forward, global tokens/s, efficiency t(1)/t(P), and
#     token-row bytes sent per rank against the deduplicated minimum;
#  2. the same total work as 1 rank × 2 threads and as 2 ranks × 1 thread.
# usage: bench/scaling.sh [BUILD_DIR] [TOKENS_PER_RANK]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
tokens=${2:-2048}
bench=$build/bench/moe_dist_bench
run() { "$here/../launch/moe-run" "$@" 2>/dev/null; }

echo "moe expert-parallel forward, mid config, $tokens tokens per rank, $(nproc) cores"
echo
echo "1. Weak scaling, 1 thread per rank (4 ranks oversubscribe a 2-core machine)"
printf "%5s %-15s %9s %10s %10s %14s %14s %9s\n" ranks mode "ms" "tokens/s" efficiency "bytes/rank" "per-assign." "dedup saves"
declare -A base
for mode in dedup per-assignment; do
  for np in 1 2 4; do
    IFS=, read -r P threads T m ms tps dedup_bytes assign_bytes dropped < <(run -np "$np" --threads 1 "$bench" --tokens "$tokens" --traffic "$mode")
    [[ -n "${base[$mode]:-}" ]] || base[$mode]=$ms
    eff=$(awk -v a="${base[$mode]}" -v b="$ms" 'BEGIN { printf "%.2f", a / b }')
    saved=$(awk -v d="$dedup_bytes" -v a="$assign_bytes" 'BEGIN { if (a > 0) printf "%.1f%%", 100 * (1 - d / a); else print "-" }')
    sent=$([[ $mode == dedup ]] && echo "$dedup_bytes" || echo "$assign_bytes")
    printf "%5s %-15s %9.1f %10.0f %10s %14.0f %14.0f %9s\n" "$P" "$m" "$ms" "$tps" "$eff" "$sent" "$assign_bytes" "$saved"
  done
done
echo "efficiency = ms at 1 rank / ms at P ranks (same tokens per rank); bytes/rank = token rows this mode sends"
echo "to other ranks per forward (dedup is the minimum of docs/design.md §2); per-assign. = what one row per assignment sends"
echo
echo "2. Same total work ($((2 * tokens)) tokens): 1 rank × 2 threads against 2 ranks × 1 thread"
IFS=, read -r _ _ _ _ ms_1x2 tps_1x2 _ < <(run -np 1 --threads 2 "$bench" --tokens $((2 * tokens)))
IFS=, read -r _ _ _ _ ms_2x1 tps_2x1 _ < <(run -np 2 --threads 1 "$bench" --tokens "$tokens")
printf "%-22s %9.1f ms %10.0f tokens/s\n" "1 rank  x 2 threads" "$ms_1x2" "$tps_1x2"
printf "%-22s %9.1f ms %10.0f tokens/s\n" "2 ranks x 1 thread" "$ms_2x1" "$tps_2x1"
awk -v a="$tps_2x1" -v b="$tps_1x2" 'BEGIN { printf "2x1 / 1x2 throughput: %.3f (target >= 0.8)\n", a / b }'
