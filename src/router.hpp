// The router (DESIGN §1 gate, top-k, weights, aux loss): one rank's tokens in, each
// token's k experts and weights out. Backend ops do the work; the results the host
// plan needs come back to host memory.
#pragma once

#include <cstdint>
#include <vector>

#include "buffer.hpp"
#include "kernels/ops.hpp"
#include "moe/config.hpp"

namespace moe {

// Backend-memory results of the last route, kept for the backward pass.
struct RouterBuffers {
  explicit RouterBuffers(kernels::Ops& ops)
      : logits(ops), probs(ops), weights(ops), lse(ops), indices(ops) {}
  Buffer<float> logits;        // [T, E]
  Buffer<float> probs;         // [T, E]
  Buffer<float> weights;       // [T, k]
  Buffer<float> lse;           // [T] log-sum-exp of each token's logits
  Buffer<std::int32_t> indices;  // [T, k]
};

struct Routing {
  std::int64_t tokens = 0;
  std::vector<std::int32_t> indices;  // [T·k], host
  std::vector<float> weights;         // [T·k], host
  std::vector<double> prob_sums;      // [E]: Σ_t probs[t, e]
  std::vector<std::int64_t> assignments_per_expert;  // [E]: top-k choices before any drop
  double aux_loss = 0.0;
  double z_loss = 0.0;  // ST-MoE router z-loss: mean over tokens of logsumexp(logits)²
};

// x: [T, H] and gate_weights: [H, E], both in backend memory.
void route_tokens(kernels::Ops& ops, const float* x, std::int64_t tokens, const float* gate_weights,
                  const MOEConfig& config, RouterBuffers& buffers, Routing& routing);

// L_aux = E · Σ_i f_i · P_i with f_i = counts[i] / (T·k) and P_i = prob_sums[i] / T;
// 0 when T = 0.
double load_balancing_loss(const std::vector<double>& prob_sums,
                           const std::vector<std::int64_t>& counts, std::int64_t tokens,
                           std::int64_t top_k);

// counts[e] = how many of indices[0..n) are e.
std::vector<std::int64_t> count_per_expert(const std::int32_t* indices, std::int64_t n,
                                           std::int64_t num_experts);

}  // namespace moe
