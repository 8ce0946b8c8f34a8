// One token's routing (DESIGN §1): max-subtracted softmax over its E logits, the k
// largest probabilities (ties to the lower expert index, slots by descending
// probability) and their weights. Shared by the CPU ops and the CUDA kernel.
#pragma once

#include <cstdint>

#include "kernels/host_device.hpp"

namespace moe::kernels {

// Orders probabilities for top-k: a number beats NaN, so a row with NaN still picks
// valid, distinct experts (the lowest indices when every value is NaN).
MOE_HD inline bool ranks_above(float candidate, float best) {
  if (candidate != candidate) return false;  // NaN never beats anything
  if (best != best) return true;             // a number beats NaN
  return candidate > best;                   // strict: equal values keep the lower index
}

// logits, probs: [E]; indices, weights: [k]. Returns log(sum(exp(logits))) for the
// router z-loss. With normalize, weights are probs / (sum of the k probs).
MOE_HD inline float softmax_topk_row(const float* logits, int num_experts, int top_k,
                                     bool normalize, float* probs, std::int32_t* indices,
                                     float* weights) {
  float max_logit = logits[0];
  for (int e = 1; e < num_experts; ++e) {
    if (logits[e] > max_logit || max_logit != max_logit) max_logit = logits[e];
  }
  float sum = 0.0f;
  for (int e = 0; e < num_experts; ++e) {
    probs[e] = expf(logits[e] - max_logit);
    sum += probs[e];
  }
  const float inv_sum = 1.0f / sum;
  for (int e = 0; e < num_experts; ++e) probs[e] *= inv_sum;

  float selected_sum = 0.0f;
  for (int j = 0; j < top_k; ++j) {
    int best = -1;
    for (int e = 0; e < num_experts; ++e) {
      bool taken = false;
      for (int i = 0; i < j; ++i) taken = taken || indices[i] == e;
      if (taken) continue;
      if (best < 0 || ranks_above(probs[e], probs[best])) best = e;
    }
    indices[j] = best;
    weights[j] = probs[best];
    selected_sum += probs[best];
  }
  if (normalize) {
    const float inv = 1.0f / selected_sum;
    for (int j = 0; j < top_k; ++j) weights[j] *= inv;
  }
  return max_logit + logf(sum);
}

// One token's router backward. d_weights[j] is the loss gradient of slot j's weight
// (0 when the slot was dropped). Selection is constant (DESIGN §1): the gradient flows
// into the selected probabilities — through the normalisation when normalize — and
// through the softmax into every logit; aux_grad[e] adds ∂L/∂probs[e] of the
// load-balancing loss, and z_scale · lse · probs that of the router z-loss.
// d_logits: [E] (output).
MOE_HD inline void router_backward_row(const float* probs, const std::int32_t* indices,
                                       const float* d_weights, float lse, int num_experts,
                                       int top_k, bool normalize, const float* aux_grad,
                                       float z_scale, float* d_logits) {
  for (int e = 0; e < num_experts; ++e) d_logits[e] = aux_grad ? aux_grad[e] : 0.0f;
  float selected = 0.0f, weighted = 0.0f;
  for (int j = 0; j < top_k; ++j) selected += probs[indices[j]];
  for (int j = 0; j < top_k; ++j) weighted += d_weights[j] * probs[indices[j]];
  for (int j = 0; j < top_k; ++j) {
    // w_j = p_j / s  ⇒  ∂L/∂p_j = (∂L/∂w_j − Σ_i ∂L/∂w_i · w_i) / s
    const float d_prob = normalize ? (d_weights[j] - weighted / selected) / selected : d_weights[j];
    d_logits[indices[j]] += d_prob;
  }
  float inner = 0.0f;
  for (int e = 0; e < num_experts; ++e) inner += d_logits[e] * probs[e];
  for (int e = 0; e < num_experts; ++e)
    d_logits[e] = probs[e] * (d_logits[e] - inner) + z_scale * lse * probs[e];
}

}  // namespace moe::kernels
