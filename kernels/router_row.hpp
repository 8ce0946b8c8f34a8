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

}  // namespace moe::kernels
