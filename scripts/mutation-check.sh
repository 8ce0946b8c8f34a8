#!/usr/bin/env bash
# Breaks the library on purpose, one known mutation at a time, in a scratch copy of
# the tree, and checks that the tests catch each one: evidence that the tests fail
# when the code they cover is wrong. Not part of CI (it rebuilds once per mutation).
# usage: scripts/mutation-check.sh [ctest -L label, default unit]
set -uo pipefail
source_dir=$(cd "$(dirname "$0")/.." && pwd)
label=${1:-unit}
scratch=$(mktemp -d /tmp/moe-mutation.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
git -C "$source_dir" ls-files -z | (cd "$source_dir" && xargs -0 cp --parents -t "$scratch")
cmake -S "$scratch" -B "$scratch/build" -DMOE_WITH_CUDA=OFF -DMOE_BUILD_BENCH=OFF >/dev/null

# file | sed expression | what it breaks
mutations=(
  "kernels/router_row.hpp|s/return candidate > best;/return candidate >= best;/|ties go to the higher index"
  "kernels/router_row.hpp|s/weights\[j\] \*= inv;/weights[j] *= 1.0f;/|top-k weights not normalised"
  "src/dispatch_plan.cpp|s/if (load < plan.capacity)/if (load <= plan.capacity)/|capacity off by one"
  "src/dispatch_plan.cpp|s/std::ceil(exact)/std::floor(exact)/|capacity rounded down"
  "src/router.cpp|s/return E \* dot;/return dot;/|aux loss without the E factor"
  "kernels/cpu/cpu_ops.cpp|s/const float w = weights ? weights\[a\] : 1.0f;/const float w = 1.0f;/|combine ignores the gate weights"
  "kernels/cpu/cpu_ops.cpp|s/src + static_cast<std::int64_t>(rows\[i\]) \* width/src + static_cast<std::int64_t>(rows[i] ^ 1) * width/|gather reads the neighbouring row"
  "src/expert_compute.cpp|s/params.b2, kernels::Act::Identity/nullptr, kernels::Act::Identity/|second expert bias dropped"
  "src/dispatch_plan.cpp|s/grouping.grouped_row_of\[a\] = static_cast<std::int32_t>(g);/grouping.grouped_row_of[a] = static_cast<std::int32_t>(g == 0 ? g : g - 1);/|combine reads the wrong grouped row"
)

failed=0
for m in "${mutations[@]}"; do
  IFS='|' read -r file expr what <<<"$m"
  cp "$scratch/$file" "$scratch/$file.orig"
  sed -i "$expr" "$scratch/$file"
  if cmp -s "$scratch/$file" "$scratch/$file.orig"; then
    echo "NOT APPLIED  $what ($file: the pattern no longer matches; update this script)"
    failed=1
  elif ! cmake --build "$scratch/build" -j "$(nproc)" >/dev/null 2>&1; then
    echo "NO BUILD     $what"
    failed=1
  elif ctest --test-dir "$scratch/build" -L "$label" -j "$(nproc)" >/dev/null 2>&1; then
    echo "SURVIVED     $what  <- the tests did not notice"
    failed=1
  else
    echo "caught       $what"
  fi
  mv "$scratch/$file.orig" "$scratch/$file"
  touch "$scratch/$file"  # newer than the mutated object, so the next build restores it
done
exit $failed
