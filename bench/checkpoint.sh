#!/usr/bin/env bash
# Checkpoint save/load of a 1.07 GB checkpoint (E=32, H=1024, F=4096) at 1, 2 and 4
# ranks, against plain sequential POSIX I/O of the same bytes in the same run, with
# glibc's default malloc and with large freed buffers kept in the heap (--tune-malloc,
# an experiment: it helped before moe's in-place Fletcher32 filter, no longer). Reads
# from disk need root (to drop the page cache).
# usage: bench/checkpoint.sh [BUILD_DIR] [DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
dir=${2:-/tmp}
header=--header
for malloc in default tuned; do
  for np in 1 2 4; do
    flag=()
    [[ $malloc == tuned ]] && flag=(--tune-malloc)
    "$here/../launch/moe-run" -np "$np" "$build/bench/checkpoint_bench" --dir "$dir" "${flag[@]}" $header 2>/dev/null
    header=
  done
done | column -s, -t
