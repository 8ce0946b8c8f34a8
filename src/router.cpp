#include "router.hpp"

#include <functional>

namespace moe {

kernels::RouterParams router_params(const MOEConfig& c) {
  kernels::RouterParams p;
  p.num_experts = static_cast<int>(c.num_experts);
  p.top_k = static_cast<int>(c.top_k);
  p.normalize = c.normalize_top_k;
  p.sigmoid = c.router == RouterKind::Sigmoid;
  p.n_group = static_cast<int>(c.n_group);
  p.topk_group = static_cast<int>(c.topk_group);
  p.scale = c.routed_scaling_factor;
  return p;
}

void launch_routing(kernels::Ops& ops, const float* x, std::int64_t tokens, const float* gate_weights,
                    const float* expert_bias, const MOEConfig& config, RouterBuffers& buffers) {
  const std::int64_t E = config.num_experts, k = config.top_k, H = config.hidden_dim;
  const auto T = static_cast<std::size_t>(tokens);
  float* logits = buffers.logits.resize(T * static_cast<std::size_t>(E));
  float* probs = buffers.probs.resize(T * static_cast<std::size_t>(E));
  float* weights = buffers.weights.resize(T * static_cast<std::size_t>(k));
  float* lse = buffers.lse.resize(T);
  std::int32_t* indices = buffers.indices.resize(T * static_cast<std::size_t>(k));
  ops.gemm(false, false, tokens, E, H, 1.0f, x, H, gate_weights, E, 0.0f, logits, E);
  ops.route(logits, tokens, router_params(config), expert_bias, probs, indices, weights, lse);
}

void finish_routing(kernels::Ops& ops, std::int64_t tokens, const MOEConfig& config, RouterBuffers& buffers,
                    Routing& routing, const std::function<void()>& meanwhile) {
  const std::int64_t E = config.num_experts, k = config.top_k;
  const auto T = static_cast<std::size_t>(tokens);
  // The host needs the choices, weights, log-sum-exps and probability sums: fetched with
  // one wait for the device, not one each.
  routing.tokens = tokens;
  routing.indices.resize(T * static_cast<std::size_t>(k));
  routing.weights.resize(T * static_cast<std::size_t>(k));
  routing.lse.resize(T);
  ops.copy_to_host_later(routing.indices.data(), buffers.indices.data(), sizeof(std::int32_t) * routing.indices.size());
  ops.copy_to_host_later(routing.weights.data(), buffers.weights.data(), sizeof(float) * routing.weights.size());
  ops.copy_to_host_later(routing.lse.data(), buffers.lse.data(), sizeof(float) * T);
  routing.prob_sums.assign(static_cast<std::size_t>(E), 0.0);
  ops.column_sums_later(buffers.probs.data(), tokens, E, routing.prob_sums.data());
  if (meanwhile) meanwhile();
  ops.wait_for_downloads();
}

void routing_losses(const MOEConfig& config, Routing& routing) {
  const std::int64_t tokens = routing.tokens, k = config.top_k;
  routing.assignments_per_expert = count_per_expert(routing.indices.data(), tokens * k, config.num_experts);
  routing.aux_loss = load_balancing_loss(routing.prob_sums, routing.assignments_per_expert, tokens, k);
  routing.z_loss = 0.0;
  for (float v : routing.lse) routing.z_loss += double(v) * double(v);
  if (tokens > 0) routing.z_loss /= static_cast<double>(tokens);
}

void route_tokens(kernels::Ops& ops, const float* x, std::int64_t tokens, const float* gate_weights,
                  const float* expert_bias, const MOEConfig& config, RouterBuffers& buffers, Routing& routing) {
  launch_routing(ops, x, tokens, gate_weights, expert_bias, config, buffers);
  finish_routing(ops, tokens, config, buffers, routing);
  routing_losses(config, routing);
}

void router_backward(kernels::Ops& ops, const float* x, const float* gate_weights, const MOEConfig& config,
                     const Routing& routing, const float* d_slot, double aux_loss_coef,
                     double z_loss_coef, RouterBuffers& buffers, float* gate_grad, float* dx) {
  const std::int64_t H = config.hidden_dim, E = config.num_experts, k = config.top_k, T = routing.tokens;
  std::vector<float> aux(static_cast<std::size_t>(E), 0.0f);
  float z_scale = 0.0f;
  if (T > 0) {
    // L_aux = E · Σ_i f_i · P_i with f constant and P_i = mean_t probs[t, i]:
    // ∂/∂probs[t, i] = E · f_i / T.
    for (std::int64_t i = 0; i < E; ++i)
      aux[static_cast<std::size_t>(i)] = static_cast<float>(
          aux_loss_coef * double(E) *
          (double(routing.assignments_per_expert[static_cast<std::size_t>(i)]) / double(T * k)) / double(T));
    // L_z = mean_t lse_t²: ∂/∂lse_t = 2 · lse_t / T.
    z_scale = static_cast<float>(z_loss_coef * 2.0 / double(T));
  }
  float* d_logits = buffers.d_logits.resize(static_cast<std::size_t>(T * E));
  ops.router_backward(buffers.logits.data(), buffers.probs.data(), buffers.indices.data(), d_slot,
                      buffers.lse.data(), T, router_params(config), buffers.aux_grad.upload(aux), z_scale, d_logits);
  ops.gemm(true, false, H, E, T, 1.0f, x, H, d_logits, E, 0.0f, gate_grad, E);
  ops.gemm(false, true, T, H, E, 1.0f, d_logits, E, gate_weights, E, 1.0f, dx, H);
}

double load_balancing_loss(const std::vector<double>& prob_sums,
                           const std::vector<std::int64_t>& counts, std::int64_t tokens,
                           std::int64_t top_k) {
  if (tokens == 0) return 0.0;
  const double E = static_cast<double>(prob_sums.size());
  double dot = 0.0;
  for (std::size_t i = 0; i < prob_sums.size(); ++i) {
    const double f = static_cast<double>(counts[i]) / static_cast<double>(tokens * top_k);
    const double p = prob_sums[i] / static_cast<double>(tokens);
    dot += f * p;
  }
  return E * dot;
}

std::vector<std::int64_t> count_per_expert(const std::int32_t* indices, std::int64_t n,
                                           std::int64_t num_experts) {
  std::vector<std::int64_t> counts(static_cast<std::size_t>(num_experts), 0);
  for (std::int64_t i = 0; i < n; ++i) ++counts[static_cast<std::size_t>(indices[i])];
  return counts;
}

void update_expert_bias(std::vector<float>& bias, const std::vector<std::int64_t>& load, float rate) {
  double total = 0.0;
  for (std::int64_t l : load) total += static_cast<double>(l);
  const double mean = load.empty() ? 0.0 : total / static_cast<double>(load.size());
  for (std::size_t i = 0; i < bias.size(); ++i) {
    const double gap = mean - static_cast<double>(load[i]);
    bias[i] += gap > 0 ? rate : gap < 0 ? -rate : 0.0f;
  }
}

}  // namespace moe
