// A float64 reference of docs/design.md §1 and §1b written as plain loops from the
// definitions, independent of the library's code: what the tests compare every numeric
// path against. Parameters may be float (the layer's) or double (for finite
// differences); the arithmetic is float64 throughout.
//
// A flat expert is its tensors in order (moe/layer.hpp expert_params): W_in [H, G·F],
// W_out [F, H], then, with biases, b_in [G·F] and b_out [H]; G = 1 for ffn, 2 for glu,
// whose W_in holds the gate projection in columns [0, F) and the up projection in
// columns [F, 2F).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "moe/config.hpp"

namespace moe::reference {

inline double activate(Activation act, double z) {
  const double pi = 3.14159265358979323846;
  switch (act) {
    case Activation::ReLU: return std::isnan(z) ? z : (z > 0 ? z : 0.0);
    case Activation::GELU: return 0.5 * z * (1.0 + std::erf(z / std::sqrt(2.0)));
    case Activation::SiLU: return z / (1.0 + std::exp(-z));
    case Activation::GELUTanh: return 0.5 * z * (1.0 + std::tanh(std::sqrt(2.0 / pi) * (z + 0.044715 * z * z * z)));
  }
  return z;
}

inline double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

// Column `col` of an expert's first projection x·W_in + b_in on one row x [H] (expert
// of width F): the pre-activation for col < F, glu's up projection for col ≥ F.
template <class X, class P>
double projection(const X* x, const P* flat, const MOEConfig& c, std::int64_t F, std::int64_t col) {
  const std::int64_t H = c.hidden_dim, in = (c.expert_kind == ExpertKind::GLU ? 2 : 1) * F;
  const P* b_in = c.expert_bias ? flat + H * in + F * H : nullptr;
  double z = b_in ? double(b_in[col]) : 0.0;
  for (std::int64_t h = 0; h < H; ++h) z += double(x[h]) * double(flat[h * in + col]);
  return z;
}

// One expert of width F on one row x [H]: ffn act(x·W1 + b1)·W2 + b2, or glu
// (act(x·Wg + bg) ⊙ (x·Wu + bu))·Wd + bd.
template <class X, class P>
std::vector<double> expert_row(const X* x, const P* flat, const MOEConfig& c, std::int64_t F) {
  const std::int64_t H = c.hidden_dim;
  const bool glu = c.expert_kind == ExpertKind::GLU;
  const std::int64_t in = (glu ? 2 : 1) * F;
  const P* w_out = flat + H * in;
  const P* b_out = c.expert_bias ? w_out + F * H + in : nullptr;
  auto projection = [&](std::int64_t col) { return reference::projection(x, flat, c, F, col); };
  std::vector<double> hidden(F), y(H);
  for (std::int64_t f = 0; f < F; ++f)
    hidden[f] = glu ? activate(c.activation, projection(f)) * projection(F + f) : activate(c.activation, projection(f));
  for (std::int64_t h = 0; h < H; ++h) {
    double v = b_out ? double(b_out[h]) : 0.0;
    for (std::int64_t f = 0; f < F; ++f) v += hidden[f] * double(w_out[f * H + h]);
    y[h] = v;
  }
  return y;
}

// The least |pre-activation| of an expert of width F over the rows x [T,H]: how near
// its rows come to a kink of the activation (ReLU's, at 0), where a difference quotient
// may straddle it, or float32 and float64 take different sides.
template <class X, class P>
double least_pre_activation(const X* x, std::int64_t T, const P* flat, const MOEConfig& c, std::int64_t F) {
  double least = std::numeric_limits<double>::infinity();
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t f = 0; f < F; ++f)
      least = std::min(least, std::abs(projection(x + t * c.hidden_dim, flat, c, F, f)));
  return least;
}

// The routed experts' width.
template <class X, class P>
std::vector<double> expert_row(const X* x, const P* flat, const MOEConfig& c) {
  return expert_row(x, flat, c, c.expert_dim);
}

struct Routing {
  std::vector<double> logits;         // [T,E]
  std::vector<double> probs;          // [T,E] normalised scores: softmax, or s / Σ s
  std::vector<std::int32_t> indices;  // [T,k]
  std::vector<double> weights;        // [T,k]
  std::vector<double> counts;         // [E] top-k choices
  double aux_loss = 0;
  double z_loss = 0;
  // Smallest relative gap, over tokens, between the k-th selected and the best
  // excluded selection score: a test whose float32 and float64 top-k might
  // legitimately differ has a tiny gap.
  double min_selection_gap = std::numeric_limits<double>::infinity();
};

// The experts a token may choose with group-limited routing: the topk_group groups of
// highest (sum of the two best selection scores); ties to the lower group.
inline std::vector<bool> allowed_experts(const std::vector<double>& score, const MOEConfig& c) {
  const std::int64_t E = c.num_experts;
  std::vector<bool> allowed(E, true);
  if (c.n_group <= 1) return allowed;
  const std::int64_t size = E / c.n_group;
  std::vector<double> group_score(c.n_group);
  for (std::int64_t g = 0; g < c.n_group; ++g) {
    std::vector<double> s(score.begin() + g * size, score.begin() + (g + 1) * size);
    std::sort(s.begin(), s.end(), std::greater<double>());
    group_score[g] = s[0] + (size > 1 ? s[1] : 0.0);
  }
  std::vector<std::int64_t> order(c.n_group);
  for (std::int64_t g = 0; g < c.n_group; ++g) order[g] = g;
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return group_score[a] > group_score[b]; });
  std::vector<bool> group_ok(c.n_group, false);
  for (std::int64_t j = 0; j < c.topk_group; ++j) group_ok[order[j]] = true;
  for (std::int64_t e = 0; e < E; ++e) allowed[e] = group_ok[e / size];
  return allowed;
}

// x [T,H], wg [H,E], bias [E] or null (sigmoid router's selection bias).
template <class X, class P>
Routing route(const X* x, std::int64_t T, const P* wg, const MOEConfig& c, const P* bias = nullptr) {
  const std::int64_t E = c.num_experts, k = c.top_k, H = c.hidden_dim;
  const bool sigmoid_router = c.router == RouterKind::Sigmoid;
  Routing r;
  r.logits.assign(T * E, 0.0);
  r.probs.assign(T * E, 0.0);
  r.indices.assign(T * k, -1);
  r.weights.assign(T * k, 0.0);
  r.counts.assign(E, 0.0);
  std::vector<double> prob_sums(E, 0.0);
  for (std::int64_t t = 0; t < T; ++t) {
    double* logit = &r.logits[t * E];
    for (std::int64_t e = 0; e < E; ++e)
      for (std::int64_t h = 0; h < H; ++h) logit[e] += double(x[t * H + h]) * double(wg[h * E + e]);
    const double mx = *std::max_element(logit, logit + E);
    double sum = 0;
    for (std::int64_t e = 0; e < E; ++e) sum += std::exp(logit[e] - mx);
    const double lse = mx + std::log(sum);
    r.z_loss += lse * lse;
    // Router scores, and the selection scores top-k ranks by.
    std::vector<double> score(E), select(E);
    for (std::int64_t e = 0; e < E; ++e) {
      score[e] = sigmoid_router ? sigmoid(logit[e]) : std::exp(logit[e] - lse);
      select[e] = score[e] + (sigmoid_router && bias ? double(bias[e]) : 0.0);
    }
    double total = 0;
    for (double s : score) total += s;
    for (std::int64_t e = 0; e < E; ++e) r.probs[t * E + e] = sigmoid_router ? score[e] / total : score[e];
    const std::vector<bool> allowed = allowed_experts(select, c);
    std::vector<std::int32_t> order;
    for (std::int64_t e = 0; e < E; ++e)
      if (allowed[e]) order.push_back(std::int32_t(e));
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return select[a] > select[b]; });
    double selected = 0;
    for (std::int64_t j = 0; j < k; ++j) selected += score[order[j]];
    if (sigmoid_router) selected += 1e-20;
    for (std::int64_t j = 0; j < k; ++j) {
      r.indices[t * k + j] = order[j];
      r.weights[t * k + j] =
          double(c.routed_scaling_factor) * (c.normalize_top_k ? score[order[j]] / selected : score[order[j]]);
      r.counts[order[j]] += 1;
    }
    if (k < std::int64_t(order.size()))
      r.min_selection_gap =
          std::min(r.min_selection_gap, (select[order[k - 1]] - select[order[k]]) /
                                            std::max({std::abs(select[order[k - 1]]), std::abs(select[order[k]]), 1e-300}));
    for (std::int64_t e = 0; e < E; ++e) prob_sums[e] += r.probs[t * E + e];
  }
  if (T > 0) {
    double dot = 0;
    for (std::int64_t e = 0; e < E; ++e) dot += (r.counts[e] / double(T * k)) * (prob_sums[e] / double(T));
    r.aux_loss = double(E) * dot;
    r.z_loss /= double(T);
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

// out[t] = Σ over kept slots of weight · expert(x[t]).
template <class X, class Weight, class P>
std::vector<double> expert_computation(const X* x, std::int64_t T, const std::vector<std::int32_t>& indices,
                                       const std::vector<Weight>& weights, const std::vector<const P*>& params,
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

// out[t] += g_t · shared(x[t]), g_t = sigmoid(x[t]·ws) with a shared gate, else 1.
template <class X, class P>
void add_shared_expert(const X* x, std::int64_t T, const P* flat, const P* gate, const MOEConfig& c,
                       std::vector<double>& out) {
  const std::int64_t H = c.hidden_dim;
  for (std::int64_t t = 0; t < T; ++t) {
    const auto y = expert_row(x + t * H, flat, c, c.shared_expert_dim);
    double g = 1.0;
    if (gate) {
      double logit = 0;
      for (std::int64_t h = 0; h < H; ++h) logit += double(x[t * H + h]) * double(gate[h]);
      g = sigmoid(logit);
    }
    for (std::int64_t h = 0; h < H; ++h) out[t * H + h] += g * y[h];
  }
}

}  // namespace moe::reference
