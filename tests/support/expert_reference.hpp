// The experts of an ExpertBatch computed from their definition (docs/design.md §1b) in
// float64, for the CPU and CUDA tests of Ops::expert_ffn: each row through its group's
// z = x·W_in + b_in, hidden = act(z) (ffn) or act(z[:, :F]) ⊙ z[:, F:] (glu),
// out = hidden·W_out + b_out. Host pointers; rows from row_offsets.front() on.
#pragma once

#include <cmath>
#include <vector>

#include "kernels/ops.hpp"

namespace moe::testing {

// Each activation from its definition, in float64 (NaN stays NaN: max(NaN, 0) is not 0).
inline double reference_activation(kernels::Act act, double z) {
  const double pi = 3.14159265358979323846;
  switch (act) {
    case kernels::Act::Identity: return z;
    case kernels::Act::ReLU: return std::isnan(z) ? z : std::fmax(z, 0.0);
    case kernels::Act::GELU: return 0.5 * z * (1 + std::erf(z / std::sqrt(2.0)));
    case kernels::Act::SiLU: return z / (1 + std::exp(-z));
    case kernels::Act::GELUTanh: return 0.5 * z * (1 + std::tanh(std::sqrt(2 / pi) * (z + 0.044715 * z * z * z)));
  }
  return z;
}

// Points the batch's per-group weights and biases into arrays that hold `groups`
// experts one after another: w_in [groups, H, G·F], w_out [groups, F, H], b_in
// [groups, G·F], b_out [groups, H], with H, F and G (2 for glu) from the batch; a null
// array gives every group a null pointer (no bias).
inline void point_at_experts(kernels::ExpertBatch& b, std::size_t groups, const float* w_in, const float* w_out,
                             const float* b_in = nullptr, const float* b_out = nullptr) {
  const std::int64_t H = b.in_dim, F = b.width, GF = b.gated ? 2 * F : F;
  b.w_in.assign(groups, nullptr), b.w_out.assign(groups, nullptr);
  b.b_in.assign(groups, nullptr), b.b_out.assign(groups, nullptr);
  for (std::size_t g = 0; g < groups; ++g) {
    const auto i = static_cast<std::int64_t>(g);
    b.w_in[g] = w_in + i * H * GF, b.w_out[g] = w_out + i * F * H;
    if (b_in) b.b_in[g] = b_in + i * GF;
    if (b_out) b.b_out[g] = b_out + i * H;
  }
}

struct ExpertReference {
  std::vector<double> pre, hidden, out;  // [rows, G·F], [rows, F], [rows, H]
};

inline ExpertReference reference_expert_ffn(const kernels::ExpertBatch& b) {
  const std::int64_t H = b.in_dim, F = b.width, GF = b.gated ? 2 * F : F;
  const std::int64_t first = b.row_offsets.front(), n = b.row_offsets.back() - first;
  ExpertReference ref{std::vector<double>(n * GF), std::vector<double>(n * F), std::vector<double>(n * H)};
  for (std::size_t g = 0; g + 1 < b.row_offsets.size(); ++g)
    for (std::int64_t r = b.row_offsets[g]; r < b.row_offsets[g + 1]; ++r) {
      const std::int64_t i = r - first;
      for (std::int64_t c = 0; c < GF; ++c) {
        double z = b.b_in[g] ? b.b_in[g][c] : 0.0;
        for (std::int64_t l = 0; l < H; ++l) z += double(b.x[r * H + l]) * b.w_in[g][l * GF + c];
        ref.pre[i * GF + c] = z;
      }
      for (std::int64_t c = 0; c < F; ++c) {
        const double a = reference_activation(b.act, ref.pre[i * GF + c]);
        ref.hidden[i * F + c] = b.gated ? a * ref.pre[i * GF + F + c] : a;
      }
      for (std::int64_t c = 0; c < H; ++c) {
        double y = b.b_out[g] ? b.b_out[g][c] : 0.0;
        for (std::int64_t l = 0; l < F; ++l) y += ref.hidden[i * F + l] * b.w_out[g][l * H + c];
        ref.out[i * H + c] = y;
      }
    }
  return ref;
}

}  // namespace moe::testing
