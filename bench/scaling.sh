#!/usr/bin/env bash
# Weak scaling of the expert-parallel forward (issue 3) at the mid config (E=8, k=2,
# H=1024, F=4096), all figures from this one run:
#  1. 1, 2 and 4 ranks with 1 thread each and a fixed number of tokens per rank, in
#     both traffic modes: ms per forward, global tokens/s, efficiency t(1)/t(P), and
#     token-row bytes sent per rank against the deduplicated minimum;
#  2. the same total work as 1 rank × 2 threads and as 2 ranks × 1 thread;
#  3. the two all-to-all phases (dispatch and send back) against a raw MPI_Alltoallv of
#     the same rows both ways, timed in the same run (target: raw / phases >= 0.9), and
#     against one of the rows that cross ranks only (the layer keeps a rank's own rows
#     in place, so it moves fewer bytes than the first raw exchange).
# usage: bench/scaling.sh [BUILD_DIR] [TOKENS_PER_RANK] [--plot DIR]
#   --plot DIR also draws the tables as PNG charts in DIR (matplotlib).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
positional=() plot_dir=
while (($#)); do
  case "$1" in
    --plot) plot_dir=$2; shift 2 ;;
    *) positional+=("$1"); shift ;;
  esac
done
build=${positional[0]:-$here/../build}
tokens=${positional[1]:-2048}
bench=$build/bench/moe_dist_bench
run() { "$here/../launch/moe-run" "$@" 2>/dev/null; }
table=$(mktemp)
trap 'rm -f "$table"' EXIT
echo "section,ranks,mode,ms,tokens_per_s,efficiency,phases_ms,raw_ms,raw_over_phases,raw_remote_ms,raw_remote_over_phases" >"$table"

echo "moe expert-parallel forward, mid config, $tokens tokens per rank, $(nproc) cores"
echo
echo "1. Weak scaling, 1 thread per rank (4 ranks oversubscribe a 2-core machine)"
printf "%5s %-15s %9s %10s %10s %14s %14s %9s\n" ranks mode "ms" "tokens/s" efficiency "bytes/rank" "per-assign." "dedup saves"
declare -A base
for mode in dedup per-assignment; do
  for np in 1 2 4; do
    IFS=, read -r P threads T m ms tps dedup_bytes assign_bytes dropped phases raw share raw_remote remote_share \
      < <(run -np "$np" --threads 1 "$bench" --tokens "$tokens" --traffic "$mode")
    [[ -n "${base[$mode]:-}" ]] || base[$mode]=$ms
    eff=$(awk -v a="${base[$mode]}" -v b="$ms" 'BEGIN { printf "%.2f", a / b }')
    saved=$(awk -v d="$dedup_bytes" -v a="$assign_bytes" 'BEGIN { if (a > 0) printf "%.1f%%", 100 * (1 - d / a); else print "-" }')
    sent=$([[ $mode == dedup ]] && echo "$dedup_bytes" || echo "$assign_bytes")
    printf "%5s %-15s %9.1f %10.0f %10s %14.0f %14.0f %9s\n" "$P" "$m" "$ms" "$tps" "$eff" "$sent" "$assign_bytes" "$saved"
    echo "weak,$P,$m,$ms,$tps,$eff,$phases,$raw,$share,$raw_remote,$remote_share" >>"$table"
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
echo
echo "3. The all-to-all phases against raw MPI_Alltoallv (dedup, median ms per forward)"
printf "%5s %11s %15s %13s %17s %13s\n" ranks "phases ms" "raw, same rows" "raw / phases" "raw, crossing only" "raw / phases"
for np in 2 4; do
  IFS=, read -r P _ _ _ _ _ _ _ _ phases raw share raw_remote remote_share \
    < <(run -np "$np" --threads 1 "$bench" --tokens "$tokens" --reps 15 --separate-waits)
  printf "%5s %11.3f %15.3f %13.3f %17.3f %13.3f\n" "$P" "$phases" "$raw" "$share" "$raw_remote" "$remote_share"
  echo "alltoall,$P,dedup,,,,$phases,$raw,$share,$raw_remote,$remote_share" >>"$table"
done
echo "phases = the layer's dispatch + send-back (row counts, rows and metadata out; rows back; not the packing), the"
echo "slowest rank's, each after a barrier that waits for the slower ranks (timed apart); a rank's rows for its own"
echo "experts never move. raw = two MPI_Alltoallv after a barrier, timed right after each forward: of the same rows"
echo "(each rank's own included, which MPI copies), and of the rows that cross ranks only (target >= 0.9 of the first)"
if (( $(nproc) < 4 )); then
  echo "4 ranks on $(nproc) cores are oversubscribed: each collective then waits for ranks to be scheduled"
fi
echo

if [[ -n "$plot_dir" ]]; then
  source "$here/../scripts/find-python.sh"
  moe_find_python matplotlib
  "$MOE_PYTHON" "$here/plot_scaling.py" "$table" "$plot_dir"
fi
