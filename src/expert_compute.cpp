#include "expert_compute.hpp"

#include <algorithm>
#include <numeric>
#include <utility>

#include "moe/error.hpp"

namespace moe {

ExpertParams expert_params_from_flat(const float* flat, const ExpertLayout& layout) {
  auto at = [&](ExpertTensorId id) -> const float* {
    const int i = layout.index(id);
    return i < 0 ? nullptr : flat + layout.flat_offset(i);
  };
  return ExpertParams{at(kWeightIn), at(kWeightOut), at(kBiasIn), at(kBiasOut)};
}

kernels::Act to_kernel_act(Activation activation) {
  switch (activation) {
    case Activation::ReLU: return kernels::Act::ReLU;
    case Activation::GELU: return kernels::Act::GELU;
    case Activation::SiLU: return kernels::Act::SiLU;
    case Activation::GELUTanh: return kernels::Act::GELUTanh;
  }
  return kernels::Act::ReLU;
}

namespace {

bool is_glu(const ExpertLayout& layout) { return layout.kind == ExpertKind::GLU; }

kernels::ExpertBatch expert_batch(const ExpertLayout& layout, Activation activation, const float* x,
                                  std::vector<std::int64_t> row_offsets) {
  kernels::ExpertBatch batch;
  batch.x = x;
  batch.row_offsets = std::move(row_offsets);
  batch.in_dim = layout.hidden;
  batch.width = layout.width;
  batch.gated = is_glu(layout);
  batch.act = to_kernel_act(activation);
  return batch;
}

void add_expert(kernels::ExpertBatch& batch, const ExpertParams& p) {
  batch.w_in.push_back(p.w_in), batch.b_in.push_back(p.b_in);
  batch.w_out.push_back(p.w_out), batch.b_out.push_back(p.b_out);
}

void add_gradients(kernels::ExpertBatchGradients& grads, const ExpertGradients& g) {
  grads.w_in.push_back(g.w_in), grads.b_in.push_back(g.b_in);
  grads.w_out.push_back(g.w_out), grads.b_out.push_back(g.b_out);
}

}  // namespace

void expert_forward(kernels::Ops& ops, const float* x, std::int64_t n, const ExpertParams& p,
                    const ExpertLayout& layout, Activation activation, float* pre, float* hidden, float* y) {
  kernels::ExpertBatch batch = expert_batch(layout, activation, x, {0, n});
  add_expert(batch, p);
  ops.expert_ffn(batch, pre, hidden, y);
}

ExpertRows load_plan(const ExpertAssignments& assignments, const ExpertGrouping& grouping, ExpertWorkspace& ws) {
  for (std::int64_t r = 0; r < assignments.output_rows; ++r)
    for (std::int32_t a = assignments.offsets[static_cast<std::size_t>(r)]; a < assignments.offsets[static_cast<std::size_t>(r) + 1]; ++a)
      MOE_CHECK_ARG(assignments.input_row[static_cast<std::size_t>(a)] == r, "load_plan", "assignment ", a,
                    " reads row ", assignments.input_row[static_cast<std::size_t>(a)], " but writes row ", r,
                    "; the experts' backward needs them equal");
  ws.gather_rows.upload(grouping.grouped_input_row);
  ws.combine_offsets.upload(assignments.offsets);
  ws.combine_sources.upload(grouping.grouped_row_of);
  ws.combine_weights.upload(assignments.weight);
  if (!assignments.slot.empty()) ws.entry_slot.upload(assignments.slot);
  ExpertRows rows;
  rows.output_rows = assignments.output_rows;
  rows.expert_offsets = grouping.expert_offsets;
  rows.entries = assignments.size();
  return rows;
}

namespace {

// The float32 rows gather_expert_ffn_combine may use over A grouped rows (A: the rows
// their buffers are sized for, ExpertRows::reserved): those a
// backward reads (the gathered rows, pre-activations, hidden and outputs), in the
// backend's kept form (kernels/ops.hpp: bf16 for CUDA in bf16, in half the floats);
// without a backward, float32 scratch where the backend computes in it (not CUDA in
// bf16, whose inference forward stays in its own bf16 scratch); else null.
struct ExpertScratch {
  float* grouped_in = nullptr;
  float* pre = nullptr;
  float* hidden = nullptr;
  float* grouped_out = nullptr;
};
ExpertScratch expert_scratch(kernels::Ops& ops, std::size_t A, const ExpertLayout& layout, bool keep_for_backward,
                             ExpertWorkspace& ws) {
  ExpertScratch s;
  if (!keep_for_backward && !ops.expert_scratch_for_inference()) return s;
  auto resize_rows = [&](Buffer<float>& buffer, std::int64_t width) {
    const std::size_t values = A * static_cast<std::size_t>(width);
    return buffer.resize(keep_for_backward ? ops.kept_floats(values) : values);
  };
  s.grouped_in = resize_rows(ws.grouped_in, layout.hidden);
  s.hidden = resize_rows(ws.hidden, layout.width);
  if (keep_for_backward || is_glu(layout)) s.pre = resize_rows(ws.pre, layout.in_width);
  s.grouped_out = resize_rows(ws.grouped_out, layout.hidden);
  return s;
}

// The batch of `experts` experts, params[e] for local id e.
kernels::ExpertBatch expert_batch_of(const std::vector<ExpertParams>& params, std::int64_t experts,
                                     const ExpertLayout& layout, Activation activation, const float* x,
                                     std::vector<std::int64_t> row_offsets, std::int64_t rows_bound) {
  kernels::ExpertBatch batch = expert_batch(layout, activation, x, std::move(row_offsets));
  batch.rows_bound = rows_bound;
  for (std::int64_t e = 0; e < experts; ++e) add_expert(batch, params[static_cast<std::size_t>(e)]);
  return batch;
}

}  // namespace

void run_experts(kernels::Ops& ops, const ExpertRows& rows, const float* rows_in,
                 const std::vector<ExpertParams>& params, const ExpertLayout& layout, Activation activation,
                 bool keep_for_backward, ExpertWorkspace& ws, float* rows_out) {
  const ExpertScratch s = expert_scratch(ops, static_cast<std::size_t>(rows.reserved()), layout, keep_for_backward, ws);
  // Every expert's FFN on its contiguous block of grouped rows, gathered from rows_in
  // (grouped_in holds them afterwards when a backward is to read them).
  const auto experts = static_cast<std::int64_t>(rows.expert_offsets.size()) - 1;
  kernels::ExpertBatch batch =
      expert_batch_of(params, experts, layout, activation, s.grouped_in, rows.expert_offsets, rows.rows_bound);
  batch.keep_for_backward = keep_for_backward;
  // Then the weighted combine into rows_out (grouped_out holds the experts' outputs
  // afterwards when a backward is to read them).
  ops.gather_expert_ffn_combine(rows_in, ws.gather_rows.data(), s.grouped_in, batch, s.pre, s.hidden, s.grouped_out,
                                kernels::CombineInto{rows.output_rows, ws.combine_offsets.data(),
                                                     ws.combine_sources.data(), ws.combine_weights.data(), rows_out});
}

void run_experts_resident(kernels::Ops& ops, std::int64_t output_rows, std::int64_t rows, std::int64_t rows_bound,
                          const float* rows_in, const std::vector<ExpertParams>& params, const ExpertLayout& layout,
                          Activation activation, ExpertWorkspace& ws, float* rows_out) {
  const ExpertScratch s = expert_scratch(ops, static_cast<std::size_t>(std::max(rows, rows_bound)), layout, false, ws);
  const auto experts = static_cast<std::int64_t>(params.size());
  kernels::ExpertBatch batch = expert_batch_of(params, experts, layout, activation, s.grouped_in, {}, rows_bound);
  batch.keep_for_backward = false;
  ops.gather_expert_ffn_combine_resident(rows_in, ws.gather_rows.data(), rows, ws.expert_offsets.data(),
                                         s.grouped_in, batch, s.pre, s.hidden, s.grouped_out,
                                         kernels::CombineInto{output_rows, ws.combine_offsets.data(),
                                                              ws.combine_sources.data(), ws.combine_weights.data(),
                                                              rows_out});
}

bool experts_resident(const kernels::Ops& ops, const ExpertLayout& layout, Activation activation) {
  return ops.groups_resident(expert_batch(layout, activation, nullptr, {}));
}

void run_experts(kernels::Ops& ops, const ExpertAssignments& assignments, const ExpertGrouping& grouping,
                 const float* rows_in, const std::vector<ExpertParams>& params, const ExpertLayout& layout,
                 Activation activation, bool keep_for_backward, ExpertWorkspace& ws, float* rows_out) {
  run_experts(ops, load_plan(assignments, grouping, ws), rows_in, params, layout, activation, keep_for_backward,
              ws, rows_out);
}

void expert_backward(kernels::Ops& ops, const float* x, const float* pre, const float* hidden, std::int64_t n,
                     float* dy, const ExpertParams& p, const ExpertGradients& g, const ExpertLayout& layout,
                     Activation activation, float* dh, float* d_pre, float* dx) {
  kernels::ExpertBatch batch = expert_batch(layout, activation, x, {0, n});
  add_expert(batch, p);
  kernels::ExpertBatchGradients grads;
  add_gradients(grads, g);
  ops.expert_ffn_backward(batch, pre, hidden, dy, grads, dh, d_pre, dx);
}

void backward_experts(kernels::Ops& ops, const ExpertRows& rows, const float* d_rows_out,
                      const std::vector<ExpertParams>& params, const std::vector<ExpertGradients>& grads,
                      const ExpertLayout& layout, Activation activation, ExpertWorkspace& ws, float* d_rows_in,
                      float* d_weights) {
  const std::int64_t H = layout.hidden, F = layout.width, GF = layout.in_width;
  const auto A = static_cast<std::size_t>(rows.size()), reserved = static_cast<std::size_t>(rows.reserved());
  const auto experts = static_cast<std::int64_t>(rows.expert_offsets.size()) - 1;
  float* d_grouped = ws.d_grouped.resize(reserved * static_cast<std::size_t>(H));
  float* d_hidden = ws.d_hidden.resize(reserved * static_cast<std::size_t>(F));
  float* d_pre = is_glu(layout) && ops.needs_pre_gradient_scratch()
                     ? ws.d_pre.resize(reserved * static_cast<std::size_t>(GF))
                     : nullptr;

  kernels::ExpertBatch batch = expert_batch(layout, activation, ws.grouped_in.data(), rows.expert_offsets);
  batch.rows_bound = rows.rows_bound;
  batch.x_kept = true;  // the rows run_experts gathered for this backward
  kernels::ExpertBatchGradients expert_grads;
  for (std::int64_t e = 0; e < experts; ++e) {
    add_expert(batch, params[static_cast<std::size_t>(e)]);
    add_gradients(expert_grads, grads[static_cast<std::size_t>(e)]);
  }

  // The weighted combine: ∂L/∂y = w · ∂L/∂out, and ∂L/∂w = ∂L/∂out · y, through the
  // outputs as run_experts kept them. It writes the entries' rows only: a padding row's
  // gradient is zero (and so is all it adds to the expert's gradients, its input row
  // being zero too).
  const kernels::CombineInto combine{rows.output_rows, ws.combine_offsets.data(), ws.combine_sources.data(),
                                     ws.combine_weights.data(), nullptr};
  if (rows.padded) ops.fill_zero(d_grouped, sizeof(float) * A * static_cast<std::size_t>(H));
  ops.expert_combine_backward(batch, ws.grouped_out.data(), d_rows_out, combine, d_grouped, d_weights);

  // Every expert's backward, with ∂L/∂(expert input) written over ∂L/∂(expert output).
  ops.expert_ffn_backward(batch, ws.pre.data(), ws.hidden.data(), d_grouped, expert_grads, d_hidden, d_pre, d_grouped);
  // Each input row's gradient is the sum over its assignments (the gather's backward
  // is the combine again, unweighted).
  ops.combine_rows(d_grouped, H, rows.output_rows, ws.combine_offsets.data(), ws.combine_sources.data(), nullptr,
                   d_rows_in);
}

}  // namespace moe
