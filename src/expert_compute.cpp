#include "expert_compute.hpp"

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
  for (std::int64_t e = 0; e < assignments.num_experts; ++e) {
    const std::int64_t begin = grouping.expert_offsets[static_cast<std::size_t>(e)];
    const std::int64_t rows = grouping.expert_offsets[static_cast<std::size_t>(e) + 1] - begin;
    if (rows == 0) continue;
    expert_ffn(ops, grouped_in + begin * H, rows, params[static_cast<std::size_t>(e)], config,
               hidden_pre ? hidden_pre + begin * F : nullptr, hidden + begin * F,
               grouped_out + begin * H);
  }
  ops.combine_rows(grouped_out, H, assignments.output_rows, ws.combine_offsets.upload(assignments.offsets),
                   ws.combine_sources.upload(grouping.grouped_row_of),
                   ws.combine_weights.upload(assignments.weight), rows_out);
}

}  // namespace moe
