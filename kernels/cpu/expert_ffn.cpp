// The experts' FFNs on the CPU, run as one pipeline per thread.
//
// The grouped rows of all experts are cut into one equal range per OpenMP thread, and
// each thread runs, for every expert its range touches, the input GEMM, the activation
// (or glu product) and the output GEMM on those rows, one single-threaded cblas_sgemm
// after the other. Against splitting each GEMM across the threads (parallel_gemm):
// - no thread packs what another packs: an expert's weights are packed twice only when
//   a range boundary cuts it, and the token rows once;
// - the activation follows its GEMM on the same core (for small experts, such as
//   DeepSeek's, while the GEMM's output is still in that core's cache), and one
//   thread's memory-bound pass overlaps another thread's GEMM;
// - the work is balanced by rows however uneven the experts' loads are, with one
//   fork/join per call instead of three per expert.
#include "kernels/cpu/expert_ffn.hpp"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/elementwise.hpp"
#include "kernels/cpu/parallel_gemm.hpp"

namespace moe::kernels::cpu {
namespace {

// c[r, :] = bias for rows r < rows of c [rows, cols]; the GEMM then adds with beta = 1.
void seed_rows(float* c, std::int64_t rows, std::int64_t cols, const float* bias) {
  for (std::int64_t r = 0; r < rows; ++r)
    std::memcpy(c + r * cols, bias, sizeof(float) * static_cast<std::size_t>(cols));
}

// out[n, out_dim] = x[n, in_dim] · w + bias, on this thread.
void linear_rows(const float* x, std::int64_t n, std::int64_t in_dim, const float* w, std::int64_t out_dim,
                 const float* bias, float* out) {
  if (bias) seed_rows(out, n, out_dim, bias);
  serial_gemm(false, false, n, out_dim, in_dim, 1.0f, x, in_dim, w, out_dim, bias ? 1.0f : 0.0f, out, out_dim);
}

// Group g of the batch on its rows [r0, r1), on this thread.
void expert_rows(const ExpertBatch& batch, std::size_t g, std::int64_t r0, std::int64_t r1, float* pre,
                 float* hidden, float* out) {
  const std::int64_t H = batch.in_dim, F = batch.width, GF = batch.gated ? 2 * F : F, n = r1 - r0;
  float* h = hidden + r0 * F;
  float* z = pre ? pre + r0 * GF : h;  // ffn without pre: activate in place
  linear_rows(batch.x + r0 * H, n, H, batch.w_in[g], GF, batch.b_in[g], z);
  if (batch.gated)
    glu_rows(batch.act, z, n, F, h);
  else
    activation_run(batch.act, z, h, n * F);
  linear_rows(h, n, F, batch.w_out[g], H, batch.b_out[g], out + r0 * H);
}

}  // namespace

void expert_ffn(const ExpertBatch& batch, float* pre, float* hidden, float* out) {
  const std::vector<std::int64_t>& offsets = batch.row_offsets;
  if (offsets.size() < 2) return;
  const std::int64_t first = offsets.front(), rows = offsets.back() - first;
  if (rows <= 0) return;
  const std::int64_t GF = batch.gated ? 2 * batch.width : batch.width;
  const double flops = 2.0 * static_cast<double>(rows) * static_cast<double>(batch.in_dim) *
                       static_cast<double>(GF + batch.width);
  const std::int64_t threads = parts_worth(flops, rows);
  SingleThreadedBlas single_threaded;
  auto run_range = [&](std::int64_t part) {
    const std::int64_t lo = first + rows * part / threads, hi = first + rows * (part + 1) / threads;
    for (std::size_t g = 0; g + 1 < offsets.size(); ++g) {
      const std::int64_t r0 = std::max(lo, offsets[g]), r1 = std::min(hi, offsets[g + 1]);
      if (r0 < r1) expert_rows(batch, g, r0, r1, pre, hidden, out);
    }
  };
  run_parts(threads, run_range);
}

}  // namespace moe::kernels::cpu
