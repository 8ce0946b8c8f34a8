// A float64 reference of DESIGN §1 written as plain loops, independent of the
// library's code: what the tests compare every numeric path against.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "moe/config.hpp"

namespace moe::reference {

inline double activate(Activation act, double z) {
  switch (act) {
    case Activation::ReLU: return z > 0 ? z : 0;
    case Activation::GELU: return 0.5 * z * (1.0 + std::erf(z / std::sqrt(2.0)));
    case Activation::SiLU: return z / (1.0 + std::exp(-z));
  }
  return z;
}

struct Routing {
  std::vector<double> logits;       // [T,E]
  std::vector<double> probs;        // [T,E]
  std::vector<std::int32_t> indices;  // [T,k]
  std::vector<double> weights;      // [T,k]
  double aux_loss = 0;
  // Smallest gap, over tokens, between the k-th and (k+1)-th probability: a test
  // whose float32 and float64 top-k might legitimately differ has a tiny gap.
  double min_selection_gap = std::numeric_limits<double>::infinity();
};

inline Routing route(const float* x, std::int64_t T, const float* wg, const MOEConfig& c) {
  const std::int64_t E = c.num_experts, k = c.top_k, H = c.hidden_dim;
  Routing r;
  r.logits.assign(T * E, 0.0);
  r.probs.assign(T * E, 0.0);
  r.indices.assign(T * k, -1);
  r.weights.assign(T * k, 0.0);
  std::vector<double> counts(E, 0.0), prob_sums(E, 0.0);
  for (std::int64_t t = 0; t < T; ++t) {
    double* logit = &r.logits[t * E];
    for (std::int64_t e = 0; e < E; ++e)
      for (std::int64_t h = 0; h < H; ++h) logit[e] += double(x[t * H + h]) * double(wg[h * E + e]);
    const double mx = *std::max_element(logit, logit + E);
    double sum = 0;
    for (std::int64_t e = 0; e < E; ++e) sum += std::exp(logit[e] - mx);
    double* p = &r.probs[t * E];
    for (std::int64_t e = 0; e < E; ++e) p[e] = std::exp(logit[e] - mx) / sum;

    // Sort ids by descending probability, ties by ascending id.
    std::vector<std::int32_t> order(E);
    for (std::int64_t e = 0; e < E; ++e) order[e] = std::int32_t(e);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
    double selected = 0;
    for (std::int64_t j = 0; j < k; ++j) selected += p[order[j]];
    for (std::int64_t j = 0; j < k; ++j) {
      r.indices[t * k + j] = order[j];
      r.weights[t * k + j] = c.normalize_top_k ? p[order[j]] / selected : p[order[j]];
      counts[order[j]] += 1;
    }
    if (k < E) r.min_selection_gap = std::min(r.min_selection_gap, p[order[k - 1]] - p[order[k]]);
    for (std::int64_t e = 0; e < E; ++e) prob_sums[e] += p[e];
  }
  if (T > 0) {
    double dot = 0;
    for (std::int64_t e = 0; e < E; ++e) dot += (counts[e] / double(T * k)) * (prob_sums[e] / double(T));
    r.aux_loss = double(E) * dot;
  }
  return r;
}

// kept[t*k + j]: capacity C = ceil(cf·T·k/E), slot-major admission.
inline std::vector<bool> capacity_mask(const std::vector<std::int32_t>& indices, std::int64_t T,
                                       const MOEConfig& c, std::int64_t* dropped = nullptr) {
  const std::int64_t k = c.top_k;
  const double cap = c.drop_tokens ? std::ceil(double(c.capacity_factor) * double(T) * double(k) / double(c.num_experts))
                                   : std::numeric_limits<double>::infinity();
  std::vector<double> load(c.num_experts, 0);
  std::vector<bool> kept(T * k, false);
  std::int64_t lost = 0;
  for (std::int64_t j = 0; j < k; ++j)
    for (std::int64_t t = 0; t < T; ++t) {
      const int e = indices[t * k + j];
      if (load[e] < cap) {
        load[e] += 1;
        kept[t * k + j] = true;
      } else {
        ++lost;
      }
    }
  if (dropped) *dropped = lost;
  return kept;
}

// One expert on one row: y = act(x·W1 + b1)·W2 + b2 from a flat [W1, W2, b1, b2].
inline std::vector<double> expert_row(const float* x, const float* flat, const MOEConfig& c) {
  const std::int64_t H = c.hidden_dim, F = c.expert_dim;
  const float* w1 = flat;
  const float* w2 = flat + H * F;
  const float* b1 = flat + 2 * H * F;
  const float* b2 = b1 + F;
  std::vector<double> hidden(F), y(H);
  for (std::int64_t f = 0; f < F; ++f) {
    double z = b1[f];
    for (std::int64_t h = 0; h < H; ++h) z += double(x[h]) * double(w1[h * F + f]);
    hidden[f] = activate(c.activation, z);
  }
  for (std::int64_t h = 0; h < H; ++h) {
    double v = b2[h];
    for (std::int64_t f = 0; f < F; ++f) v += hidden[f] * double(w2[f * H + h]);
    y[h] = v;
  }
  return y;
}

// out[t] = Σ over kept slots of weight · expert(x[t]).
template <class Weight>
std::vector<double> expert_computation(const float* x, std::int64_t T,
                                       const std::vector<std::int32_t>& indices,
                                       const std::vector<Weight>& weights,
                                       const std::vector<const float*>& params,
                                       const MOEConfig& c) {
  const std::int64_t H = c.hidden_dim, k = c.top_k;
  const std::vector<bool> kept = capacity_mask(indices, T, c);
  std::vector<double> out(T * H, 0.0);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t j = 0; j < k; ++j) {
      if (!kept[t * k + j]) continue;
      const auto y = expert_row(x + t * H, params[indices[t * k + j]], c);
      for (std::int64_t h = 0; h < H; ++h) out[t * H + h] += double(weights[t * k + j]) * y[h];
    }
  return out;
}

}  // namespace moe::reference
