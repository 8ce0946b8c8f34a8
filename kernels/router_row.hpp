// One token's routing (docs/design.md §1 and §1b), shared by the CPU ops and the CUDA
// kernels: router scores (softmax, or sigmoid with an expert bias for selection),
// group-limited top-k (ties to the lower index, slots by descending score), the
// slot weights, and the backward of all of it.
#pragma once

#include <cstdint>

#include "kernels/host_device.hpp"

namespace moe::kernels {

// What a router row needs to know; plain data so kernels take it by value.
struct RouterParams {
  int num_experts = 0;
  int top_k = 0;
  bool normalize = true;   // divide the k selected scores by their sum
  bool sigmoid = false;    // sigmoid scores (else softmax)
  int n_group = 1;         // group-limited top-k when > 1 (at most 64 groups)
  int topk_group = 1;
  float scale = 1.0f;      // routed_scaling_factor, after normalisation
};

// Added to the sigmoid router's selected-score sum before dividing, as DeepSeek-V3 does.
constexpr float kSigmoidNormEps = 1e-20f;

// Orders scores for top-k: a number beats NaN, so a row with NaN still picks valid,
// distinct experts (the lowest indices when every value is NaN).
MOE_HD inline bool ranks_above(float candidate, float best) {
  if (candidate != candidate) return false;  // NaN never beats anything
  if (best != best) return true;             // a number beats NaN
  return candidate > best;                   // strict: equal values keep the lower index
}

MOE_HD inline float selection_score(const float* scores, const float* bias, int e) {
  return bias ? scores[e] + bias[e] : scores[e];
}

// A candidate for a maximum: its key (the order), the value carried with it, and its
// index (-1: none).
struct Choice {
  float key = 0.0f;
  float value = 0.0f;
  int index = -1;
};

// The better of two candidates: a number beats NaN, then the larger key, then the
// lower index (equal keys, or both NaN); none loses to anything. The maximum under a
// total order, so commutative and associative: any tree of these gives the first
// maximum a left-to-right walk with ranks_above finds.
MOE_HD inline Choice better_choice(const Choice& a, const Choice& b) {
  if (a.index < 0) return b;
  if (b.index < 0) return a;
  if (ranks_above(b.key, a.key)) return b;
  if (ranks_above(a.key, b.key)) return a;
  return b.index < a.index ? b : a;
}

// Group g's score for group-limited routing: the sum of its two best selection scores
// (ties to the lower index), key(e) giving expert e's. allowed_groups' rule, for an
// expert range [first, first + size).
template <class Key>
MOE_HD float group_top_two_sum(const Key& key, int first, int size) {
  Choice best, second;
  for (int e = first; e < first + size; ++e) {
    const Choice c{key(e), 0.0f, e};
    const Choice better = better_choice(best, c);
    if (better.index == e) {
      second = best;
      best = c;
    } else {
      second = better_choice(second, c);
    }
  }
  return best.key + (second.index >= 0 ? second.key : 0.0f);
}

// The groups a token may choose from, as a bit mask: the topk_group groups whose two
// best selection scores sum highest (ties to the lower group). All groups when
// n_group = 1.
MOE_HD inline std::uint64_t allowed_groups(const float* scores, const float* bias, const RouterParams& p) {
  if (p.n_group <= 1) return ~std::uint64_t{0};
  const int size = p.num_experts / p.n_group;
  float group_score[64];
  auto key = [&](int e) { return selection_score(scores, bias, e); };
  for (int g = 0; g < p.n_group; ++g) group_score[g] = group_top_two_sum(key, g * size, size);
  std::uint64_t allowed = 0;
  for (int j = 0; j < p.topk_group; ++j) {
    int best = -1;
    for (int g = 0; g < p.n_group; ++g) {
      if (allowed >> g & 1u) continue;
      if (best < 0 || ranks_above(group_score[g], group_score[best])) best = g;
    }
    allowed |= std::uint64_t{1} << best;
  }
  return allowed;
}

// indices[0..k): the k best selection scores among the allowed groups' experts, by k
// passes over the experts in index order (ties to the lower index). Up to 64 experts
// the ones already chosen are a bit mask; beyond, a look through the choices so far.
// (By count the look was four fifths of the comparisons at 64 experts with k = 8; the
// router kernel, a thread per token, took 265 µs of a 3.3 ms fine forward on an H200.)
MOE_HD inline void select_top_k(const float* scores, const float* bias, const RouterParams& p, std::int32_t* indices) {
  const std::uint64_t allowed = allowed_groups(scores, bias, p);
  const int groups = p.n_group > 1 ? p.n_group : 1, size = p.num_experts / groups;
  const bool masked = p.num_experts <= 64;
  std::uint64_t chosen = 0;  // bit e: expert e is among indices[0..j) (masked only)
  for (int j = 0; j < p.top_k; ++j) {
    int best = -1;
    for (int g = 0; g < groups; ++g) {
      if (!(allowed >> g & 1u)) continue;
      for (int e = g * size; e < (g + 1) * size; ++e) {
        bool taken = false;
        if (masked) {
          taken = chosen >> e & 1u;
        } else {
          for (int i = 0; i < j; ++i) taken = taken || indices[i] == e;
        }
        if (taken) continue;
        if (best < 0 || ranks_above(selection_score(scores, bias, e), selection_score(scores, bias, best))) best = e;
      }
    }
    indices[j] = best;
    if (masked && best >= 0) chosen |= std::uint64_t{1} << best;
  }
}

MOE_HD inline float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

// One token: logits [E] in; probs [E] out — the router's normalised scores, which the
// load-balancing loss averages (softmax probabilities, or s / Σ s for sigmoid scores
// s); indices [k] and weights [k] out. expert_bias [E] (sigmoid router; may be null)
// shifts the selection only. Returns log Σ exp(logits), for the z-loss.
MOE_HD inline float route_row(const float* logits, const RouterParams& p, const float* expert_bias, float* probs,
                              std::int32_t* indices, float* weights) {
  const int E = p.num_experts;
  float max_logit = logits[0];
  for (int e = 1; e < E; ++e) {
    if (logits[e] > max_logit || max_logit != max_logit) max_logit = logits[e];
  }
  float sum = 0.0f;
  for (int e = 0; e < E; ++e) sum += expf(logits[e] - max_logit);
  const float lse = max_logit + logf(sum);

  float selected = 0.0f;
  if (!p.sigmoid) {
    const float inv_sum = 1.0f / sum;
    for (int e = 0; e < E; ++e) probs[e] = expf(logits[e] - max_logit) * inv_sum;
    select_top_k(probs, nullptr, p, indices);
    for (int j = 0; j < p.top_k; ++j) weights[j] = probs[indices[j]], selected += weights[j];
  } else {
    // probs holds s while selecting, then s / Σ s.
    float total = 0.0f;
    for (int e = 0; e < E; ++e) probs[e] = sigmoid(logits[e]), total += probs[e];
    select_top_k(probs, expert_bias, p, indices);
    for (int j = 0; j < p.top_k; ++j) weights[j] = probs[indices[j]], selected += weights[j];
    selected += kSigmoidNormEps;
    const float inv_total = 1.0f / total;
    for (int e = 0; e < E; ++e) probs[e] *= inv_total;
  }
  const float factor = p.normalize ? p.scale / selected : p.scale;
  for (int j = 0; j < p.top_k; ++j) weights[j] *= factor;
  return lse;
}

// One token's router backward. d_weights[j] is the loss gradient of slot j's weight
// (0 when the slot was dropped). Selection is constant (docs/design.md §1): the
// gradient flows into the selected scores — through the normalisation and the scale —
// and from there into the logits (through the softmax into every logit; through the
// sigmoid into each selected one). aux_grad[e] is ∂L/∂probs[e] of the load-balancing
// loss (probs as route_row writes them); z_scale · lse · softmax(logits) is the
// router z-loss's part (softmax router only). d_logits: [E] (output).
MOE_HD inline void router_backward_row(const float* logits, const float* probs, const std::int32_t* indices,
                                       const float* d_weights, float lse, const RouterParams& p,
                                       const float* aux_grad, float z_scale, float* d_logits) {
  const int E = p.num_experts, k = p.top_k;
  // The selected scores a_j (softmax probabilities, or sigmoid scores), and their sum
  // D = Σ_j a_j + ε (ε: the sigmoid router's guard against a zero sum, else 0).
  auto score = [&](int j) { return p.sigmoid ? sigmoid(logits[indices[j]]) : probs[indices[j]]; };
  const float eps = p.sigmoid ? kSigmoidNormEps : 0.0f;
  float selected = 0.0f;
  for (int j = 0; j < k; ++j) selected += score(j);
  selected += eps;  // as route_row adds it
  // ∂L/∂a_m of slot m's score through the weights. Normalised, w_j = c · a_j / D, so
  //   ∂L/∂a_m = c · (∂L/∂w_m − Σ_j ∂L/∂w_j · a_j / D) / D
  //           = c · (Σ_j (∂L/∂w_m − ∂L/∂w_j) · a_j + ∂L/∂w_m · ε) / D².
  // The second form is the one computed: the first subtracts two near-equal terms, so
  // with k = 1, where w = c · a / D is constant, it left rounding noise of about
  // c · ulp(∂L/∂w) / a in ∂L/∂a, which reached the gate's gradient; the second gives 0.
  auto through_weight = [&](int m) {
    if (!p.normalize) return p.scale * d_weights[m];
    float differences = d_weights[m] * eps;
    for (int j = 0; j < k; ++j) differences += (d_weights[m] - d_weights[j]) * score(j);
    return p.scale * differences / selected / selected;
  };
  if (!p.sigmoid) {
    for (int e = 0; e < E; ++e) d_logits[e] = aux_grad ? aux_grad[e] : 0.0f;
    for (int j = 0; j < k; ++j) d_logits[indices[j]] += through_weight(j);
    float inner = 0.0f;
    for (int e = 0; e < E; ++e) inner += d_logits[e] * probs[e];
    for (int e = 0; e < E; ++e) d_logits[e] = probs[e] * (d_logits[e] - inner) + z_scale * lse * probs[e];
    return;
  }
  // Sigmoid: probs = s / Σ s, so the aux loss reaches every s; the weights reach the
  // selected ones; then ∂s/∂logit = s (1 − s).
  float total = 0.0f, inner = 0.0f;
  for (int e = 0; e < E; ++e) total += sigmoid(logits[e]);
  if (aux_grad)
    for (int e = 0; e < E; ++e) inner += aux_grad[e] * probs[e];
  for (int e = 0; e < E; ++e) d_logits[e] = aux_grad ? (aux_grad[e] - inner) / total : 0.0f;
  for (int j = 0; j < k; ++j) d_logits[indices[j]] += through_weight(j);
  for (int e = 0; e < E; ++e) {
    const float s = sigmoid(logits[e]);
    d_logits[e] *= s * (1.0f - s);
  }
}

}  // namespace moe::kernels
