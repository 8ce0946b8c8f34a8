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
