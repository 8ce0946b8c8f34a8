// The router (docs/design.md §1 and §1b): one rank's tokens in, each token's k experts
// and weights out, and the backward of that. Softmax and sigmoid routers, group-limited
// top-k and the routed scaling all run through kernels/router_row.hpp on the Ops
// interface; the results the host plan needs come back to host memory.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "buffer.hpp"
#include "kernels/ops.hpp"
#include "moe/config.hpp"

namespace moe {

// Backend-memory results of the last route, kept for the backward pass.
struct RouterBuffers {
  explicit RouterBuffers(kernels::Ops& ops)
      : logits(ops), probs(ops), weights(ops), lse(ops), indices(ops), d_weights(ops), aux_grad(ops),
        d_logits(ops) {}
  Buffer<float> logits;          // [T, E]
  Buffer<float> probs;           // [T, E] the router's normalised scores
  Buffer<float> weights;         // [T, k]
  Buffer<float> lse;             // [T] log-sum-exp of each token's logits
  Buffer<std::int32_t> indices;  // [T, k]
  Buffer<float> d_weights, aux_grad, d_logits;  // backward scratch (d_weights: ∂L/∂weight of each slot)
};

struct Routing {
  std::int64_t tokens = 0;
  std::vector<std::int32_t> indices;  // [T·k], host
  std::vector<float> weights;         // [T·k], host
  std::vector<float> lse;             // [T], host: log Σ exp(logits) per token
  std::vector<double> prob_sums;      // [E]: Σ_t probs[t, e]
  std::vector<std::int64_t> assignments_per_expert;  // [E]: top-k choices before any drop
  double aux_loss = 0.0;
  double z_loss = 0.0;  // ST-MoE router z-loss: mean over tokens of logsumexp(logits)²
};

kernels::RouterParams router_params(const MOEConfig& config);

// x: [T, H], gate_weights: [H, E] and expert_bias: [E] (sigmoid router; null means
// zero) in backend memory. route_tokens is launch_routing then finish_routing: the
// first queues the router's work and leaves its results in `buffers`; the second
// brings what the host needs back with one wait, so that work queued between the two
// (the single-rank plan on a GPU) costs no wait of its own. `meanwhile`, when given,
// queues work after the downloads and before the wait, which is for the downloads
// alone (Ops::wait_for_downloads): the device runs it (the layer's shared expert)
// while the host waits and then plans, instead of idling through that round trip.
void launch_routing(kernels::Ops& ops, const float* x, std::int64_t tokens, const float* gate_weights,
                    const float* expert_bias, const MOEConfig& config, RouterBuffers& buffers);
void finish_routing(kernels::Ops& ops, std::int64_t tokens, const MOEConfig& config, RouterBuffers& buffers,
                    Routing& routing, const std::function<void()>& meanwhile = nullptr);
// The host's sums over what finish_routing brought back: the choices per expert, the
// aux loss and the z-loss. Apart from finish_routing so that the layer queues its
// experts first and the device runs them while the host counts (T·k choices: 65 536 a
// forward at the fine-grained config). route_tokens runs all three.
void routing_losses(const MOEConfig& config, Routing& routing);
void route_tokens(kernels::Ops& ops, const float* x, std::int64_t tokens, const float* gate_weights,
                  const float* expert_bias, const MOEConfig& config, RouterBuffers& buffers, Routing& routing);

// The router's backward after route_tokens on the same buffers: d_slot [T·k] (backend memory) is
// ∂L/∂weight of each slot (0 where dropped); the aux loss and z-loss enter with their
// coefficients. Writes this rank's ∂L/∂gate_weights into gate_grad [H, E] and adds
// the router's part of ∂L/∂x into dx [T, H] (backend memory).
void router_backward(kernels::Ops& ops, const float* x, const float* gate_weights, const MOEConfig& config,
                     const Routing& routing, const float* d_slot, double aux_loss_coef,
                     double z_loss_coef, RouterBuffers& buffers, float* gate_grad, float* dx);

// L_aux = E · Σ_i f_i · P_i with f_i = counts[i] / (T·k) and P_i = prob_sums[i] / T;
// 0 when T = 0.
double load_balancing_loss(const std::vector<double>& prob_sums,
                           const std::vector<std::int64_t>& counts, std::int64_t tokens,
                           std::int64_t top_k);

// counts[e] = how many of indices[0..n) are e.
std::vector<std::int64_t> count_per_expert(const std::int32_t* indices, std::int64_t n,
                                           std::int64_t num_experts);

// The aux-loss-free balancing step (docs/design.md §1b): b_i += rate · sign(mean_j
// load_j − load_i), in float32, for global loads (the same on every rank).
void update_expert_bias(std::vector<float>& bias, const std::vector<std::int64_t>& load, float rate);

}  // namespace moe
