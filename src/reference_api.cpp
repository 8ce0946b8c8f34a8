// The reference API's functions: argument checks, then the same router, plan and
// expert code the distributed layer runs, on the CPU ops.
#include <memory>

#include "dispatch_plan.hpp"
#include "expert_compute.hpp"
#include "input_checks.hpp"
#include "kernels/ops.hpp"
#include "moe/moe.hpp"
#include "router.hpp"

namespace moe {
namespace {

// Workspaces live as long as the calling thread, so repeated calls reuse warm memory;
// one per thread keeps concurrent calls from different threads independent.
struct ApiWorkspace {
  std::unique_ptr<kernels::Ops> ops = kernels::make_cpu_ops();
  RouterBuffers router{*ops};
  ExpertWorkspace experts{*ops};
};

ApiWorkspace& workspace() {
  thread_local ApiWorkspace ws;
  return ws;
}

std::int64_t checked_gating_inputs(const Tensor<FLOAT_TYPE>& input,
                                   const Tensor<FLOAT_TYPE>& gate_weights,
                                   const MOEConfig& config, const char* where) {
  config.validate();
  checks::input_rank(input.shape(), where);
  checks::gate_weights(gate_weights.shape(), input.shape().back(), config, where);
  return checks::input_tokens(input.shape(), config, where);
}

}  // namespace

std::tuple<Tensor<FLOAT_TYPE>, Tensor<INT_TYPE>, Tensor<FLOAT_TYPE>> moe_gating_forward(
    const Tensor<FLOAT_TYPE>& input, const Tensor<FLOAT_TYPE>& gate_weights,
    const MOEConfig& config) {
  const std::int64_t T = checked_gating_inputs(input, gate_weights, config, "moe_gating_forward");
  ApiWorkspace& ws = workspace();
  Routing routing;
  route_tokens(*ws.ops, input.data(), T, gate_weights.data(), nullptr, config, ws.router, routing);

  const std::vector<std::int64_t> routing_shape{T, config.top_k};
  Tensor<FLOAT_TYPE> loss({1});
  loss[0] = static_cast<float>(routing.aux_loss);
  return {Tensor<FLOAT_TYPE>(routing_shape, std::move(routing.weights)),
          Tensor<INT_TYPE>(routing_shape, std::move(routing.indices)), std::move(loss)};
}

Tensor<FLOAT_TYPE> moe_gate_probabilities(const Tensor<FLOAT_TYPE>& input,
                                          const Tensor<FLOAT_TYPE>& gate_weights,
                                          const MOEConfig& config) {
  const std::int64_t T =
      checked_gating_inputs(input, gate_weights, config, "moe_gate_probabilities");
  ApiWorkspace& ws = workspace();
  Routing routing;
  route_tokens(*ws.ops, input.data(), T, gate_weights.data(), nullptr, config, ws.router, routing);
  return Tensor<FLOAT_TYPE>({T, config.num_experts}, ws.router.probs.download());
}

Tensor<FLOAT_TYPE> moe_expert_computation(const Tensor<FLOAT_TYPE>& input,
                                          const Tensor<FLOAT_TYPE>& expert_weights,
                                          const Tensor<INT_TYPE>& expert_indices,
                                          const std::vector<Tensor<FLOAT_TYPE>>& expert_params,
                                          const MOEConfig& config) {
  constexpr const char* where = "moe_expert_computation";
  config.validate();
  const std::int64_t T = checks::input_tokens(input.shape(), config, where);
  checks::routing_shape(expert_weights.shape(), T, config, "expert_weights", where);
  checks::routing_shape(expert_indices.shape(), T, config, "expert_indices", where);
  MOE_CHECK_ARG(static_cast<std::int64_t>(expert_params.size()) == config.num_experts, where,
                "expert_params has ", expert_params.size(), " tensors; expected num_experts = ",
                config.num_experts);
  const ExpertLayout layout = expert_layout(config);
  std::vector<ExpertParams> params;
  params.reserve(expert_params.size());
  for (std::size_t e = 0; e < expert_params.size(); ++e) {
    const std::string name = "expert_params[" + std::to_string(e) + "]";
    checks::flat_expert_params(expert_params[e].numel(), config, name.c_str(), where);
    params.push_back(expert_params_from_flat(expert_params[e].data(), layout));
  }
  checks::expert_indices_in_range(expert_indices.data(), T, config, where);

  const DispatchPlan plan = make_dispatch_plan(expert_indices.data(), T, config);
  const ExpertAssignments assignments =
      token_assignments(plan, expert_indices.data(), expert_weights.data());
  Tensor<FLOAT_TYPE> output(input.shape());
  ApiWorkspace& ws = workspace();
  run_experts(*ws.ops, assignments, group_by_expert(assignments), input.data(), params, layout, config.activation,
              /*keep_for_backward=*/false, ws.experts, output.data());
  return output;
}

Tensor<FLOAT_TYPE> compute_load_balancing_loss(const Tensor<FLOAT_TYPE>& gate_probs,
                                               const Tensor<INT_TYPE>& expert_indices,
                                               const MOEConfig& config) {
  constexpr const char* where = "compute_load_balancing_loss";
  config.validate();
  MOE_CHECK_ARG(gate_probs.rank() == 2 && gate_probs.dim(1) == config.num_experts, where,
                "gate_probs has shape ", shape_to_string(gate_probs.shape()),
                "; expected [num_tokens, num_experts] with num_experts = ", config.num_experts);
  const std::int64_t T = gate_probs.dim(0);
  checks::routing_shape(expert_indices.shape(), T, config, "expert_indices", where);
  checks::expert_indices_in_range(expert_indices.data(), T, config, where);

  ApiWorkspace& ws = workspace();
  std::vector<double> prob_sums(static_cast<std::size_t>(config.num_experts));
  ws.ops->column_sums_later(gate_probs.data(), T, config.num_experts, prob_sums.data());
  ws.ops->wait_for_downloads();
  const auto counts = count_per_expert(expert_indices.data(), T * config.top_k, config.num_experts);
  Tensor<FLOAT_TYPE> loss({1});
  loss[0] = static_cast<float>(load_balancing_loss(prob_sums, counts, T, config.top_k));
  return loss;
}

Tensor<FLOAT_TYPE> apply_expert_ffn(const Tensor<FLOAT_TYPE>& input,
                                    const Tensor<FLOAT_TYPE>& expert_weights,
                                    const MOEConfig& config) {
  constexpr const char* where = "apply_expert_ffn";
  config.validate();
  const std::int64_t n = checks::input_tokens(input.shape(), config, where);
  checks::flat_expert_params(expert_weights.numel(), config, "expert_weights", where);
  ApiWorkspace& ws = workspace();
  Tensor<FLOAT_TYPE> output(input.shape());
  const ExpertLayout layout = expert_layout(config);
  const auto rows = static_cast<std::size_t>(n);
  float* pre = layout.kind == ExpertKind::GLU ? ws.experts.pre.resize(rows * static_cast<std::size_t>(layout.in_width))
                                              : nullptr;
  float* hidden = ws.experts.hidden.resize(rows * static_cast<std::size_t>(layout.width));
  expert_forward(*ws.ops, input.data(), n, expert_params_from_flat(expert_weights.data(), layout), layout,
                 config.activation, pre, hidden, output.data());
  return output;
}

}  // namespace moe
