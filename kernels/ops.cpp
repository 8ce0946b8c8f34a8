// The Ops operations that have a default made of the others.
#include "kernels/ops.hpp"

#include "kernels/random_stream.hpp"

namespace moe::kernels {

void Ops::expert_ffn(const ExpertBatch& batch, float* pre, float* hidden, float* out) {
  const std::int64_t H = batch.in_dim, F = batch.width, GF = batch.gated ? 2 * F : F;
  const std::int64_t first = batch.row_offsets.front(), rows = batch.row_offsets.back() - first;
  float* z = batch.gated ? pre : nullptr;  // glu: the projection, then the product
  const Act first_act = batch.gated ? Act::Identity : batch.act;
  float* first_pre = batch.gated ? nullptr : pre;
  float* first_out = batch.gated ? z : hidden;
  if (batch.row_offsets.size() == 2) {
    // One expert (the shared expert): plain linears, as before there was a batch.
    if (rows == 0) return;
    linear(batch.x + first * H, rows, H, batch.w_in[0], GF, batch.b_in[0], first_act,
           first_pre ? first_pre + first * GF : nullptr, first_out + first * GF);
    if (batch.gated) glu(z + first * GF, rows, F, batch.act, hidden + first * F);
    linear(hidden + first * F, rows, F, batch.w_out[0], H, batch.b_out[0], Act::Identity, nullptr, out + first * H);
    return;
  }
  grouped_linear(batch.x, batch.row_offsets, H, batch.w_in, GF, batch.b_in, first_act, first_pre, first_out);
  if (batch.gated) glu(z + first * GF, rows, F, batch.act, hidden + first * F);
  grouped_linear(hidden, batch.row_offsets, F, batch.w_out, H, batch.b_out, Act::Identity, nullptr, out);
}

void Ops::expert_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                      const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                      std::int64_t ldc) {
  gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void Ops::fill_normal(float* out, std::int64_t count, std::uint64_t seed, std::uint64_t stream) {
  fill_normal_on_host(out, count, stream_start(seed, stream));
}

void Ops::for_each_concurrently(std::int64_t count, const std::function<void(std::int64_t)>& fn) {
  for (std::int64_t i = 0; i < count; ++i) fn(i);
}

}  // namespace moe::kernels
