// The single-process MoE API, named as in the reference API (shared/reference/
// moe-kernel-api.md) so that code written against it ports directly. Computes exactly
// docs/design.md §1 on the CPU. Every function validates its arguments and throws moe::Error
// naming the argument, its value and what was expected.
//
// Inputs are [B, S, H] or [T, H] with T = B·S; T = 0 is valid. Non-finite input
// (NaN or ±Inf) never crashes and never yields an out-of-range index: such a token's
// probabilities are NaN, its top-k indices are still k distinct experts in [0, E)
// (the lowest ids when every probability is NaN), and its weights and output row
// are NaN; other tokens are unaffected, and the load-balancing loss is NaN.
#pragma once

#include <cstdint>
#include <tuple>
#include <vector>

#include "moe/config.hpp"
#include "moe/error.hpp"
#include "moe/tensor.hpp"

namespace moe {

// Routing: returns (expert_weights [T,k], expert_indices [T,k], load_balancing_loss [1]).
std::tuple<Tensor<FLOAT_TYPE>, Tensor<INT_TYPE>, Tensor<FLOAT_TYPE>> moe_gating_forward(
    const Tensor<FLOAT_TYPE>& input, const Tensor<FLOAT_TYPE>& gate_weights,
    const MOEConfig& config);

// The router's normalised scores [T, E] that moe_gating_forward routes by — softmax
// probabilities, or s / Σ s for the sigmoid router (whose expert bias these functions
// take as zero) — an addition to the reference API, to feed compute_load_balancing_loss.
Tensor<FLOAT_TYPE> moe_gate_probabilities(const Tensor<FLOAT_TYPE>& input,
                                          const Tensor<FLOAT_TYPE>& gate_weights,
                                          const MOEConfig& config);

// Runs the selected experts and combines them: output has the input's shape. Applies
// the capacity (docs/design.md §1) when config.drop_tokens is true. expert_params holds
// num_experts flat tensors [W1, W2, b1, b2] of 2·H·F + F + H elements each.
Tensor<FLOAT_TYPE> moe_expert_computation(const Tensor<FLOAT_TYPE>& input,
                                          const Tensor<FLOAT_TYPE>& expert_weights,
                                          const Tensor<INT_TYPE>& expert_indices,
                                          const std::vector<Tensor<FLOAT_TYPE>>& expert_params,
                                          const MOEConfig& config);

// L_aux = E · Σ_i f_i · P_i (docs/design.md §1): gate_probs [T,E], expert_indices [T,k]; [1].
Tensor<FLOAT_TYPE> compute_load_balancing_loss(const Tensor<FLOAT_TYPE>& gate_probs,
                                               const Tensor<INT_TYPE>& expert_indices,
                                               const MOEConfig& config);

// One expert's FFN, act(x·W1 + b1)·W2 + b2, on input [n,H] (or [B,S,H]); same shape out.
Tensor<FLOAT_TYPE> apply_expert_ffn(const Tensor<FLOAT_TYPE>& input,
                                    const Tensor<FLOAT_TYPE>& expert_weights,
                                    const MOEConfig& config);

// The reference API's benchmark: num_runs forwards (moe_gating_forward, then
// moe_expert_computation) of `num_tokens` random tokens (64, as the reference) through
// experts initialised from seed 0, after one untimed warm-up. Prints the reference's
// two lines, "Average time per forward pass: … ms" and "Throughput: … tokens/sec",
// and returns the figures.
struct BenchmarkResult {
  double average_ms = 0;        // wall time per forward
  double tokens_per_second = 0;
  std::int64_t num_tokens = 0;
  int num_runs = 0;
};
BenchmarkResult benchmark_moe_performance(const MOEConfig& config, int num_runs = 100,
                                          std::int64_t num_tokens = 64);

}  // namespace moe
