// The Ops operations that have a default made of the others.
#include "kernels/ops.hpp"

namespace moe::kernels {

void Ops::expert_ffn(const ExpertBatch& batch, float* pre, float* hidden, float* out) {
  const std::int64_t H = batch.in_dim, F = batch.width;
  if (batch.gated) {
    grouped_linear(batch.x, batch.row_offsets, H, batch.w_in, 2 * F, batch.b_in, Act::Identity, nullptr, pre);
    const std::int64_t first = batch.row_offsets.front(), rows = batch.row_offsets.back() - first;
    glu(pre + first * 2 * F, rows, F, batch.act, hidden + first * F);
  } else {
    grouped_linear(batch.x, batch.row_offsets, H, batch.w_in, F, batch.b_in, batch.act, pre, hidden);
  }
  grouped_linear(hidden, batch.row_offsets, F, batch.w_out, H, batch.b_out, Act::Identity, nullptr, out);
}

void Ops::for_each_concurrently(std::int64_t count, const std::function<void(std::int64_t)>& fn) {
  for (std::int64_t i = 0; i < count; ++i) fn(i);
}

}  // namespace moe::kernels
