// The expert side of a MoE layer (DESIGN §2 steps 4–5 and the weighted half of 7):
// gather each expert's rows into one block, run the expert FFN as one GEMM pair per
// expert, and combine the weighted outputs into output rows. Used unchanged by the
// single-process API, by a rank's experts in the distributed layer, and on every backend.
#pragma once

#include <cstdint>
#include <vector>

#include "buffer.hpp"
#include "dispatch_plan.hpp"
#include "kernels/ops.hpp"
#include "moe/config.hpp"

namespace moe {

// One expert's parameters in backend memory: W1 [H,F], W2 [F,H], b1 [F], b2 [H].
struct ExpertParams {
  const float* w1;
  const float* w2;
  const float* b1;
  const float* b2;
};

// Where one expert's gradients accumulate: dW1 [H,F], dW2 [F,H], db1 [F], db2 [H].
struct ExpertGradients {
  float* w1;
  float* w2;
  float* b1;
  float* b2;
};

// Views a flat [W1, W2, b1, b2] tensor (the reference API's layout).
ExpertParams expert_params_from_flat(const float* flat, std::int64_t hidden_dim,
                                     std::int64_t expert_dim);

kernels::Act to_kernel_act(Activation activation);

// Reused across calls; after a forward it holds what the backward pass reads.
struct ExpertWorkspace {
  explicit ExpertWorkspace(kernels::Ops& ops)
      : grouped_in(ops), hidden_pre(ops), hidden(ops), grouped_out(ops),
        gather_rows(ops), combine_offsets(ops), combine_sources(ops), combine_weights(ops),
        d_grouped(ops), d_hidden(ops), d_weights(ops) {}
  Buffer<float> grouped_in;   // [A, H] input rows, grouped by expert
  Buffer<float> hidden_pre;   // [A, F] x·W1 + b1 (kept only for training)
  Buffer<float> hidden;       // [A, F] act(x·W1 + b1)
  Buffer<float> grouped_out;  // [A, H] expert outputs before weighting
  Buffer<std::int32_t> gather_rows;
  Buffer<std::int32_t> combine_offsets;
  Buffer<std::int32_t> combine_sources;
  Buffer<float> combine_weights;
  // Backward scratch.
  Buffer<float> d_grouped;  // [A, H] ∂L/∂(expert output), then ∂L/∂(expert input)
  Buffer<float> d_hidden;   // [A, F]
  Buffer<float> d_weights;  // [A] ∂L/∂(assignment weight)
};

// rows_out[r] = Σ_a weight[a] · FFN_{expert[a]}(rows_in[input_row[a]]) for every output
// row r of `assignments`; rows with no assignment become zero. params[e] is the
// expert that local id e names. rows_in and rows_out are [*, H] in backend memory.
void run_experts(kernels::Ops& ops, const ExpertAssignments& assignments,
                 const ExpertGrouping& grouping, const float* rows_in,
                 const std::vector<ExpertParams>& params, const MOEConfig& config,
                 bool keep_for_backward, ExpertWorkspace& workspace, float* rows_out);

// The backward of run_experts, after a run_experts with keep_for_backward on the same
// workspace (and for assignments whose input row is their output row, as both the
// token and the received-row assignments are): given d_rows_out[r] = ∂L/∂rows_out[r], accumulates every local expert's
// parameter gradients into grads[e], writes d_rows_in[r] = ∂L/∂rows_in[r] and returns
// ∂L/∂weight[a] for every assignment a in d_weights (backend memory, [A]).
void backward_experts(kernels::Ops& ops, const ExpertAssignments& assignments,
                      const ExpertGrouping& grouping, const float* d_rows_out,
                      const std::vector<ExpertParams>& params,
                      const std::vector<ExpertGradients>& grads, const MOEConfig& config,
                      ExpertWorkspace& workspace, float* d_rows_in, float* d_weights);

// y[n,H] = act(x·W1 + b1)·W2 + b2 for one expert; hidden is an [n,F] scratch.
void expert_ffn(kernels::Ops& ops, const float* x, std::int64_t n, const ExpertParams& params,
                const MOEConfig& config, float* hidden_pre, float* hidden, float* y);

}  // namespace moe
