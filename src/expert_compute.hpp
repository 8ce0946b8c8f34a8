// The expert side of a MoE layer (docs/design.md §2 steps 4–5 and the weighted half of
// 7): gather each expert's rows into one block, run the experts as grouped GEMMs, and
// combine the weighted outputs into output rows. Used unchanged by the single-process
// API, by a rank's experts in the distributed layer, by the shared expert, and on
// every backend. The expert's shape and kind come from its ExpertLayout.
#pragma once

#include <cstdint>
#include <vector>

#include "buffer.hpp"
#include "dispatch_plan.hpp"
#include "expert_layout.hpp"
#include "kernels/ops.hpp"
#include "moe/config.hpp"

namespace moe {

// One expert's parameters in backend memory (expert_layout.hpp): W_in [H, G·F],
// W_out [F, H]; the biases b_in [G·F] and b_out [H] are null in an unbiased layout.
struct ExpertParams {
  const float* w_in;
  const float* w_out;
  const float* b_in;
  const float* b_out;
};

// Where one expert's gradients accumulate, the same tensors.
struct ExpertGradients {
  float* w_in;
  float* w_out;
  float* b_in;
  float* b_out;
};

// Views a flat expert (its tensors in layout order).
ExpertParams expert_params_from_flat(const float* flat, const ExpertLayout& layout);

kernels::Act to_kernel_act(Activation activation);

// Reused across calls; after a forward it holds what the backward pass reads.
struct ExpertWorkspace {
  explicit ExpertWorkspace(kernels::Ops& ops)
      : grouped_in(ops), pre(ops), hidden(ops), grouped_out(ops),
        gather_rows(ops), combine_offsets(ops), combine_sources(ops), combine_weights(ops), entry_slot(ops),
        expert_offsets(ops), d_grouped(ops), d_hidden(ops), d_pre(ops), d_weights(ops) {}
  Buffer<float> grouped_in;   // [A, H] input rows, grouped by expert
  Buffer<float> pre;          // [A, G·F] x·W_in + b_in (ffn: kept only for training)
  Buffer<float> hidden;       // [A, F] act(pre), or act(gate) ⊙ up for glu
  Buffer<float> grouped_out;  // [A, H] expert outputs before weighting
  // The plan (ExpertRows): the input row of each grouped row, and the combine's entries
  // (offsets per output row; each entry's grouped row, weight and — single rank — slot).
  Buffer<std::int32_t> gather_rows;
  Buffer<std::int32_t> combine_offsets;
  Buffer<std::int32_t> combine_sources;
  Buffer<float> combine_weights;
  Buffer<std::int32_t> entry_slot;
  // Each expert's first grouped row, where a forward that does not wait keeps them
  // (run_experts_resident); the host's copy is ExpertRows::expert_offsets otherwise.
  Buffer<std::int64_t> expert_offsets;
  // Backward scratch.
  Buffer<float> d_grouped;  // [A, H] ∂L/∂(expert output), then ∂L/∂(expert input)
  Buffer<float> d_hidden;   // [A, F]
  Buffer<float> d_pre;      // [A, 2F] glu only
  Buffer<float> d_weights;  // [A] ∂L/∂(assignment weight)
};

// A plan as the experts run it: the workspace's gather_rows and combine_* arrays
// (backend memory) hold the grouped rows' inputs and the combine's entries; the
// experts' row offsets stay on the host, where the GEMMs take their sizes.
struct ExpertRows {
  std::int64_t output_rows = 0;
  std::vector<std::int64_t> expert_offsets;  // [local experts + 1]
  // Capacity-padded (LayerOptions::static_shapes): some grouped rows belong to no
  // entry; they are gathered as zeros, and their gradients are zeroed before the
  // combine's backward writes the others.
  bool padded = false;
  std::int64_t entries = 0;  // the combine's entries: the kept assignments (size() unless padded)
  // The most grouped rows this call's token count can give in its layout, whatever the
  // routing (0: size()). The padded layout's rows follow the routing (each expert padded
  // to the most rows any kept); its buffers are sized for this bound instead, so that
  // they depend on the token count alone and a CUDA graph captured at that count stays
  // valid (docs/design.md §4b).
  std::int64_t rows_bound = 0;

  // The grouped rows, and the rows their buffers are sized for.
  std::int64_t size() const { return expert_offsets.empty() ? 0 : expert_offsets.back(); }
  std::int64_t reserved() const { return size() > rows_bound ? size() : rows_bound; }
};

// Copies a host plan into the workspace. Every assignment's input row must be its output
// row (true of the token and the received-row assignments), as backward_experts needs.
// When the assignments carry their slots, the workspace's entry_slot gets them too.
ExpertRows load_plan(const ExpertAssignments& assignments, const ExpertGrouping& grouping,
                     ExpertWorkspace& workspace);

// rows_out[r] = Σ_a weight[a] · expert_{expert[a]}(rows_in[input_row[a]]) for every
// output row r of the plan in the workspace; rows with no assignment become zero.
// params[e] is the expert that local id e names. rows_in and rows_out are [*, H] in
// backend memory.
void run_experts(kernels::Ops& ops, const ExpertRows& rows, const float* rows_in,
                 const std::vector<ExpertParams>& params, const ExpertLayout& layout,
                 Activation activation, bool keep_for_backward, ExpertWorkspace& workspace,
                 float* rows_out);
// run_experts for an inference forward that does not wait for its plan: the experts'
// row offsets stay in the workspace's expert_offsets (backend memory, experts + 1, from
// 0 to `rows`), none of the rows padding (a dropless single-rank plan: tokens · top_k
// rows). Where ops.groups_resident says so, nothing waits
// (kernels::Ops::gather_expert_ffn_combine_resident). Buffers are sized for
// max(rows, rows_bound) rows (ExpertRows::rows_bound).
void run_experts_resident(kernels::Ops& ops, std::int64_t output_rows, std::int64_t rows, std::int64_t rows_bound,
                          const float* rows_in, const std::vector<ExpertParams>& params, const ExpertLayout& layout,
                          Activation activation, ExpertWorkspace& workspace, float* rows_out);
// Whether run_experts_resident runs these experts without a wait on `ops`.
bool experts_resident(const kernels::Ops& ops, const ExpertLayout& layout, Activation activation);

// load_plan, then run_experts.
void run_experts(kernels::Ops& ops, const ExpertAssignments& assignments,
                 const ExpertGrouping& grouping, const float* rows_in,
                 const std::vector<ExpertParams>& params, const ExpertLayout& layout,
                 Activation activation, bool keep_for_backward, ExpertWorkspace& workspace,
                 float* rows_out);

// The backward of run_experts, after a run_experts with keep_for_backward on the same
// workspace: given d_rows_out[r] = ∂L/∂rows_out[r], accumulates every local expert's
// parameter gradients into grads[e], writes d_rows_in[r] = ∂L/∂rows_in[r] and returns
// ∂L/∂weight of every combine entry in d_weights (backend memory, [A]).
void backward_experts(kernels::Ops& ops, const ExpertRows& rows, const float* d_rows_out,
                      const std::vector<ExpertParams>& params,
                      const std::vector<ExpertGradients>& grads, const ExpertLayout& layout,
                      Activation activation, ExpertWorkspace& workspace, float* d_rows_in,
                      float* d_weights);

// One expert on n rows: y[n, H] = expert(x[n, H]). pre [n, G·F] may be null for ffn
// (then not kept); glu needs it as scratch. hidden is [n, F].
void expert_forward(kernels::Ops& ops, const float* x, std::int64_t n, const ExpertParams& params,
                    const ExpertLayout& layout, Activation activation, float* pre, float* hidden, float* y);

// Its backward, from the x, pre and hidden of a forward: accumulates the parameter
// gradients into grads and writes ∂L/∂x into dx (which may alias dy). d_hidden
// [n, F] and, for glu, d_pre [n, 2F] are scratch.
void expert_backward(kernels::Ops& ops, const float* x, const float* pre, const float* hidden, std::int64_t n,
                     float* dy, const ExpertParams& params, const ExpertGradients& grads,
                     const ExpertLayout& layout, Activation activation, float* d_hidden, float* d_pre,
                     float* dx);

}  // namespace moe
