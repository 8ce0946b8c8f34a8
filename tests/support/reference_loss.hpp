// The training loss of one rank in float64 with the routing held fixed (docs/design.md
// §1: selection is constant under differentiation): what finite differences of the
// layer's gradients are taken of. Built from the forward pieces of reference_moe.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "support/reference_moe.hpp"

namespace moe::reference {

struct LossTerms {
  double aux_coef = 0, z_coef = 0;
};

// A layer's parameters in float64: gate [H,E]; E flat experts; the shared expert
// (flat, or empty) and its gate ([H], or empty); the sigmoid router's bias ([E], or empty).
struct Params {
  std::vector<double> gate;
  std::vector<std::vector<double>> experts;
  std::vector<double> shared, shared_gate, bias;
};

// L = Σ c ⊙ out + aux_coef · L_aux + z_coef · L_z for x [T,H], with indices [T,k] and
// kept [T·k] fixing the selection and the capacity outcome.
inline double training_loss(const Params& p, const std::vector<double>& x, std::int64_t T,
                            const std::vector<std::int32_t>& indices, const std::vector<bool>& kept,
                            const std::vector<double>& c, const MOEConfig& cfg, LossTerms terms) {
  const std::int64_t E = cfg.num_experts, k = cfg.top_k, H = cfg.hidden_dim;
  // The routing at this point, for its scores, aux loss and z-loss; the weights are
  // recomputed for the fixed selection.
  const Routing r = route(x.data(), T, p.gate.data(), cfg, p.bias.empty() ? nullptr : p.bias.data());
  const bool sigmoid_router = cfg.router == RouterKind::Sigmoid;
  std::vector<double> out(T * H, 0.0), prob_sums(E, 0.0), counts(E, 0.0);
  for (std::int64_t t = 0; t < T; ++t) {
    std::vector<double> score(E);
    for (std::int64_t e = 0; e < E; ++e) {
      score[e] = sigmoid_router ? sigmoid(r.logits[t * E + e]) : r.probs[t * E + e];
      prob_sums[e] += r.probs[t * E + e];
    }
    double selected = sigmoid_router ? 1e-20 : 0.0;
    for (std::int64_t j = 0; j < k; ++j) selected += score[indices[t * k + j]], counts[indices[t * k + j]] += 1;
    for (std::int64_t j = 0; j < k; ++j) {
      if (!kept[t * k + j]) continue;
      const int e = indices[t * k + j];
      const double w = double(cfg.routed_scaling_factor) * (cfg.normalize_top_k ? score[e] / selected : score[e]);
      const auto y = expert_row(&x[t * H], p.experts[e].data(), cfg);
      for (std::int64_t h = 0; h < H; ++h) out[t * H + h] += w * y[h];
    }
  }
  if (cfg.shared_expert_dim > 0)
    add_shared_expert(x.data(), T, p.shared.data(), p.shared_gate.empty() ? nullptr : p.shared_gate.data(), cfg, out);
  double task = 0;
  for (std::int64_t i = 0; i < T * H; ++i) task += c[i] * out[i];
  double aux = 0;
  if (T > 0) {
    for (std::int64_t e = 0; e < E; ++e) aux += (counts[e] / double(T * k)) * (prob_sums[e] / double(T));
    aux *= double(E);
  }
  return task + terms.aux_coef * aux + terms.z_coef * r.z_loss;
}

// ∂L/∂v[i] by central differences of the float64 loss, v perturbed in place.
template <class Loss>
std::vector<double> numeric_gradient(std::vector<double>& v, Loss loss) {
  std::vector<double> grad(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    const double saved = v[i], step = 1e-6 * std::max(1.0, std::abs(saved));
    v[i] = saved + step;
    const double up = loss();
    v[i] = saved - step;
    const double down = loss();
    v[i] = saved;
    grad[i] = (up - down) / (2 * step);
  }
  return grad;
}

}  // namespace moe::reference
