// The training loss of one rank in float64 with the routing held fixed (DESIGN §1:
// selection is constant under differentiation): what finite differences of the
// layer's gradients are taken of.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "support/reference_moe.hpp"

namespace moe::reference {

struct LossTerms {
  double aux_coef = 0, z_coef = 0;
};

// Parameters in float64: gate [H,E]; experts E flat [W1, W2, b1, b2]; x [T,H].
// indices [T,k] and kept [T·k] fix the selection and the capacity outcome.
// L = Σ c ⊙ out + aux_coef · L_aux + z_coef · L_z.
inline double training_loss(const std::vector<double>& gate, const std::vector<std::vector<double>>& experts,
                            const std::vector<double>& x, std::int64_t T, const std::vector<std::int32_t>& indices,
                            const std::vector<bool>& kept, const std::vector<double>& c, const MOEConfig& cfg,
                            LossTerms terms) {
  const std::int64_t E = cfg.num_experts, k = cfg.top_k, H = cfg.hidden_dim, F = cfg.expert_dim;
  double task = 0, z = 0;
  std::vector<double> prob_sums(E, 0.0), counts(E, 0.0);
  for (std::int64_t t = 0; t < T; ++t) {
    std::vector<double> logit(E, 0.0), p(E);
    for (std::int64_t e = 0; e < E; ++e)
      for (std::int64_t h = 0; h < H; ++h) logit[e] += x[t * H + h] * gate[h * E + e];
    double mx = logit[0];
    for (double l : logit) mx = std::max(mx, l);
    double sum = 0;
    for (std::int64_t e = 0; e < E; ++e) sum += std::exp(logit[e] - mx);
    const double lse = mx + std::log(sum);
    z += lse * lse;
    for (std::int64_t e = 0; e < E; ++e) p[e] = std::exp(logit[e] - lse), prob_sums[e] += p[e];
    double selected = 0;
    for (std::int64_t j = 0; j < k; ++j) selected += p[indices[t * k + j]], counts[indices[t * k + j]] += 1;
    for (std::int64_t j = 0; j < k; ++j) {
      if (!kept[t * k + j]) continue;
      const int e = indices[t * k + j];
      const double w = cfg.normalize_top_k ? p[e] / selected : p[e];
      const std::vector<double>& f = experts[e];
      for (std::int64_t o = 0; o < H; ++o) {
        double y = f[2 * H * F + F + o];  // b2
        for (std::int64_t m = 0; m < F; ++m) {
          double pre = f[2 * H * F + m];  // b1
          for (std::int64_t h = 0; h < H; ++h) pre += x[t * H + h] * f[h * F + m];
          y += activate(cfg.activation, pre) * f[H * F + m * H + o];
        }
        task += c[t * H + o] * w * y;
      }
    }
  }
  double aux = 0;
  if (T > 0) {
    for (std::int64_t e = 0; e < E; ++e) aux += (counts[e] / double(T * k)) * (prob_sums[e] / double(T));
    aux *= double(E);
    z /= double(T);
  }
  return task + terms.aux_coef * aux + terms.z_coef * z;
}

}  // namespace moe::reference
