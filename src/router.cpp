#include "router.hpp"

namespace moe {

void route_tokens(kernels::Ops& ops, const float* x, std::int64_t tokens, const float* gate_weights,
                  const MOEConfig& config, RouterBuffers& buffers, Routing& routing) {
  const std::int64_t E = config.num_experts, k = config.top_k, H = config.hidden_dim;
  const auto T = static_cast<std::size_t>(tokens);
  float* logits = buffers.logits.resize(T * static_cast<std::size_t>(E));
  float* probs = buffers.probs.resize(T * static_cast<std::size_t>(E));
  float* weights = buffers.weights.resize(T * static_cast<std::size_t>(k));
  float* lse = buffers.lse.resize(T);
  std::int32_t* indices = buffers.indices.resize(T * static_cast<std::size_t>(k));

  ops.gemm(false, false, tokens, E, H, 1.0f, x, H, gate_weights, E, 0.0f, logits, E);
  ops.softmax_topk(logits, tokens, static_cast<int>(E), static_cast<int>(k), config.normalize_top_k,
                   probs, indices, weights, lse);

  routing.tokens = tokens;
  routing.indices = buffers.indices.download();
  routing.weights = buffers.weights.download();
  routing.prob_sums.assign(static_cast<std::size_t>(E), 0.0);
  ops.column_sums(probs, tokens, E, routing.prob_sums.data());
  routing.assignments_per_expert = count_per_expert(routing.indices.data(), tokens * k, E);
  routing.aux_loss = load_balancing_loss(routing.prob_sums, routing.assignments_per_expert, tokens, k);
  routing.z_loss = 0.0;
  for (float v : buffers.lse.download()) routing.z_loss += double(v) * double(v);
  if (tokens > 0) routing.z_loss /= static_cast<double>(tokens);
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

}  // namespace moe
