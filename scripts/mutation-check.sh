#!/usr/bin/env bash
# Breaks the library on purpose, one known mutation at a time, in a scratch copy of
# the tree, and checks that the tests catch each one: evidence that the tests fail
# when the code they cover is wrong. Not part of CI (it rebuilds once per mutation).
# usage: scripts/mutation-check.sh
set -uo pipefail
source_dir=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d /tmp/moe-mutation.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
git -C "$source_dir" ls-files -z --cached --others --exclude-standard | (cd "$source_dir" && xargs -0 cp --parents -t "$scratch")
cmake -S "$scratch" -B "$scratch/build" -DMOE_WITH_CUDA=OFF -DMOE_BUILD_BENCH=OFF >/dev/null

# ctest label | file | sed expression | what it breaks
mutations=(
  "unit|kernels/router_row.hpp|s/return candidate > best;/return candidate >= best;/|ties go to the higher index"
  "unit|kernels/router_row.hpp|s/p.normalize ? p.scale \/ selected : p.scale;/p.scale;/|top-k weights not normalised"
  "unit|src/dispatch_plan.cpp|s/if (load < plan.capacity)/if (load <= plan.capacity)/|capacity off by one"
  "unit|src/dispatch_plan.cpp|s/std::ceil(exact)/std::floor(exact)/|capacity rounded down"
  "unit|src/router.cpp|s/return E \* dot;/return dot;/|aux loss without the E factor"
  "unit|kernels/cpu/cpu_ops.cpp|s/const float w = weights ? weights\[a\] : 1.0f;/const float w = 1.0f;/|combine ignores the gate weights"
  "unit|kernels/cpu/cpu_ops.cpp|s/src + static_cast<std::int64_t>(rows\[i\]) \* width/src + static_cast<std::int64_t>(rows[i] ^ 1) * width/|gather reads the neighbouring row"
  "unit|kernels/cpu/expert_ffn.cpp|s/batch.w_out\[g\], H, batch.b_out\[g\]/batch.w_out[g], H, nullptr/|second expert bias dropped"
  "unit|src/dispatch_plan.cpp|s/grouping.grouped_row_of\[a\] = static_cast<std::int32_t>(g);/grouping.grouped_row_of[a] = static_cast<std::int32_t>(g == 0 ? g : g - 1);/|combine reads the wrong grouped row"
  "mpi|src/dispatch_plan.cpp|s/static_cast<std::int32_t>(out.offsets.size() - 1);/static_cast<std::int32_t>(out.offsets.size() % rows);/|received rows permuted by one"
  "mpi|src/dispatch_plan.cpp|s/^        static_cast<std::int32_t>(r);$/        static_cast<std::int32_t>(r ^ 1);/|returned rows summed into the wrong token"
  "mpi|src/dispatch_plan.cpp|s/dest.token.back() == static_cast<std::int32_t>(t);/true;/|deduplication joins rows of different tokens"
  "mpi|src/dispatch_plan.cpp|s/indices\[a\] - static_cast<std::int64_t>(owner) \* experts_per_rank/indices[a] % 2/|wrong local expert id on the owner"
  "mpi|src/token_exchange.cpp|s/if (static_cast<int>(p) == comm_.rank()) continue;  \/\/ a local copy/if (false) continue;  \/\/ a local copy/|bytes on the wire count the local copy"
  "unit|kernels/router_row.hpp|s/differences += (d_weights\[m\] - d_weights\[j\]) \* score(j);/differences += d_weights[m] * score(j);/|gradient through the top-k normalisation"
  "unit|kernels/router_row.hpp|s/+ z_scale \* lse \* probs\[e\]/+ z_scale * probs[e]/|z-loss gradient"
  "unit|kernels/router_row.hpp|s/d_logits\[e\] = aux_grad ? aux_grad\[e\] : 0.0f;/d_logits[e] = 0.0f;/|aux-loss gradient"
  "unit|kernels/ops.cpp|s/add_column_sums(dy_g, n, H, grads.b_out\[e\]);/add_column_sums(dy_g, n - 1, H, grads.b_out[e]);/|output bias gradient misses a row"
  "unit|kernels/ops.cpp|s/dz, GF, 1.0f, grads.w_in\[e\], GF);/dz, GF, 0.0f, grads.w_in[e], GF);/|input weights' gradient overwritten, not accumulated over backward calls"
  "unit|kernels/activation.hpp|s/return s \* (1.0f + z \* (1.0f - s));/return s;/|SiLU derivative"
  "unit|kernels/cpu/cpu_ops.cpp|s/dot += double(d_out\[h\]) \* double(in\[h\]);/dot += double(d_out[h]);/|weight gradient of the combine"
  "unit|kernels/optimizer_math.hpp|s/param -= lr \* weight_decay \* param;/param -= weight_decay * param;/|SGD weight decay not scaled by lr"
  "unit|src/optimizer.cpp|s/std::sqrt(sharded + replicated)/std::sqrt(sharded + 2 * replicated)/|replicated tensors counted twice in the global norm"
  "mpi|src/optimizer.cpp|s/layer.communicator().all_reduce(&sharded, 1, DataType::Float64, ReduceOp::Sum);//|global norm misses other ranks' experts"
  "mpi|src/layer.cpp|s/) transport\.all_reduce_sum(sums\[i\]\.data, sums\[i\]\.count);/) (void)0;/|replicated gradients (gate, shared expert) not summed over ranks"
  "mpi|src/layer.cpp|s/if (replicas) replica_transport->all_reduce_sum(sums\[i\]\.data, sums\[i\]\.count);/(void)0;/|gradients not summed over the replicas of expert groups"
  "mpi|src/layer.cpp|s/^    if (replicas)$/    if (false)/|the bias update's loads not summed over the replicas of expert groups"
  "mpi|src/token_exchange.cpp|s/ops_.scatter(weights_back, assignment_slot_.data(), sent, d_slot);/ops_.scatter(weights_back + (sent > 1), assignment_slot_.data(), sent - (sent > 1), d_slot);/|weight gradients returned to the wrong slots"
)

failed=0
for m in "${mutations[@]}"; do
  IFS='|' read -r label file expr what <<<"$m"
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
