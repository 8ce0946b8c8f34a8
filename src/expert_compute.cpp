#include "expert_compute.hpp"

#include "moe/error.hpp"

namespace moe {

ExpertParams expert_params_from_flat(const float* flat, std::int64_t hidden_dim,
                                     std::int64_t expert_dim) {
  const std::int64_t matrix = hidden_dim * expert_dim;
  return ExpertParams{flat, flat + matrix, flat + 2 * matrix, flat + 2 * matrix + expert_dim};
}

kernels::Act to_kernel_act(Activation activation) {
  switch (activation) {
    case Activation::ReLU: return kernels::Act::ReLU;
    case Activation::GELU: return kernels::Act::GELU;
    case Activation::SiLU: return kernels::Act::SiLU;
  }
  return kernels::Act::ReLU;
}

void expert_ffn(kernels::Ops& ops, const float* x, std::int64_t n, const ExpertParams& params,
                const MOEConfig& config, float* hidden_pre, float* hidden, float* y) {
  const std::int64_t H = config.hidden_dim, F = config.expert_dim;
  ops.linear(x, n, H, params.w1, F, params.b1, to_kernel_act(config.activation), hidden_pre, hidden);
  ops.linear(hidden, n, F, params.w2, H, params.b2, kernels::Act::Identity, nullptr, y);
}

void run_experts(kernels::Ops& ops, const ExpertAssignments& assignments,
                 const ExpertGrouping& grouping, const float* rows_in,
                 const std::vector<ExpertParams>& params, const MOEConfig& config,
                 bool keep_for_backward, ExpertWorkspace& ws, float* rows_out) {
  const std::int64_t H = config.hidden_dim, F = config.expert_dim;
  const auto A = static_cast<std::size_t>(assignments.size());

  float* grouped_in = ws.grouped_in.resize(A * static_cast<std::size_t>(H));
  float* hidden = ws.hidden.resize(A * static_cast<std::size_t>(F));
  float* hidden_pre = keep_for_backward ? ws.hidden_pre.resize(A * static_cast<std::size_t>(F)) : nullptr;
  float* grouped_out = ws.grouped_out.resize(A * static_cast<std::size_t>(H));

  ops.gather_rows(rows_in, ws.gather_rows.upload(grouping.grouped_input_row),
                  static_cast<std::int64_t>(A), H, grouped_in);
  // Every expert's GEMM pair as two grouped GEMMs over the contiguous expert blocks.
  std::vector<const float*> w1, b1, w2, b2;
  for (std::int64_t e = 0; e < assignments.num_experts; ++e) {
    const ExpertParams& p = params[static_cast<std::size_t>(e)];
    w1.push_back(p.w1), b1.push_back(p.b1), w2.push_back(p.w2), b2.push_back(p.b2);
  }
  ops.grouped_linear(grouped_in, grouping.expert_offsets, H, w1, F, b1, to_kernel_act(config.activation), hidden_pre,
                     hidden);
  ops.grouped_linear(hidden, grouping.expert_offsets, F, w2, H, b2, kernels::Act::Identity, nullptr, grouped_out);
  ops.combine_rows(grouped_out, H, assignments.output_rows, ws.combine_offsets.upload(assignments.offsets),
                   ws.combine_sources.upload(grouping.grouped_row_of),
                   ws.combine_weights.upload(assignments.weight), rows_out);
}

void backward_experts(kernels::Ops& ops, const ExpertAssignments& assignments, const ExpertGrouping& grouping,
                      const float* d_rows_out, const std::vector<ExpertParams>& params,
                      const std::vector<ExpertGradients>& grads, const MOEConfig& config, ExpertWorkspace& ws,
                      float* d_rows_in, float* d_weights) {
  const std::int64_t H = config.hidden_dim, F = config.expert_dim;
  const auto A = static_cast<std::size_t>(assignments.size());
  for (std::int64_t r = 0; r < assignments.output_rows; ++r)
    for (std::int32_t a = assignments.offsets[static_cast<std::size_t>(r)]; a < assignments.offsets[static_cast<std::size_t>(r) + 1]; ++a)
      MOE_CHECK_ARG(assignments.input_row[static_cast<std::size_t>(a)] == r, "backward_experts",
                    "assignment ", a, " reads row ", assignments.input_row[static_cast<std::size_t>(a)],
                    " but writes row ", r, "; the backward needs them equal");
  float* d_grouped = ws.d_grouped.resize(A * static_cast<std::size_t>(H));
  float* d_hidden = ws.d_hidden.resize(A * static_cast<std::size_t>(F));

  // The weighted combine: ∂L/∂y = w · ∂L/∂out, and ∂L/∂w = ∂L/∂out · y.
  ops.combine_backward(d_rows_out, ws.grouped_out.data(), H, assignments.output_rows, ws.combine_offsets.data(),
                       ws.combine_sources.data(), ws.combine_weights.data(), d_grouped, d_weights);

  const kernels::Act act = to_kernel_act(config.activation);
  for (std::int64_t e = 0; e < assignments.num_experts; ++e) {
    const std::int64_t begin = grouping.expert_offsets[static_cast<std::size_t>(e)];
    const std::int64_t n = grouping.expert_offsets[static_cast<std::size_t>(e) + 1] - begin;
    if (n == 0) continue;
    const ExpertParams& p = params[static_cast<std::size_t>(e)];
    const ExpertGradients& g = grads[static_cast<std::size_t>(e)];
    float* dy = d_grouped + begin * H;  // [n, H]
    float* dh = d_hidden + begin * F;   // [n, F]
    const float* x = ws.grouped_in.data() + begin * H;
    const float* h = ws.hidden.data() + begin * F;
    const float* z = ws.hidden_pre.data() + begin * F;
    // y = h·W2 + b2
    ops.add_column_sums(dy, n, H, g.b2);
    ops.gemm(true, false, F, H, n, 1.0f, h, F, dy, H, 1.0f, g.w2, H);
    ops.gemm(false, true, n, F, H, 1.0f, dy, H, p.w2, H, 0.0f, dh, F);
    // h = act(z), z = x·W1 + b1
    ops.activation_backward(z, dh, n * F, act, dh);
    ops.add_column_sums(dh, n, F, g.b1);
    ops.gemm(true, false, H, F, n, 1.0f, x, H, dh, F, 1.0f, g.w1, F);
    // ∂L/∂x, written over ∂L/∂y, which is no longer needed.
    ops.gemm(false, true, n, H, F, 1.0f, dh, F, p.w1, F, 0.0f, dy, H);
  }
  // Each input row's gradient is the sum over its assignments (the gather's backward
  // is the combine again, unweighted).
  ops.combine_rows(d_grouped, H, assignments.output_rows, ws.combine_offsets.data(), ws.combine_sources.data(),
                   nullptr, d_rows_in);
}

}  // namespace moe
