#include "input_checks.hpp"

#include <limits>

#include "moe/error.hpp"

namespace moe::checks {

void input_rank(const std::vector<std::int64_t>& shape, const char* where) {
  MOE_CHECK_ARG(shape.size() == 2 || shape.size() == 3, where, "input has shape ",
                shape_to_string(shape), " (rank ", shape.size(),
                "); expected [num_tokens, hidden_dim] or [batch_size, seq_len, hidden_dim]");
}

std::int64_t input_tokens(const std::vector<std::int64_t>& shape, const MOEConfig& config,
                          const char* where) {
  input_rank(shape, where);
  MOE_CHECK_ARG(shape.back() == config.hidden_dim, where,
                "Dimension mismatch: input hidden_dim != config.hidden_dim (input shape ",
                shape_to_string(shape), ", config.hidden_dim = ", config.hidden_dim, ")");
  std::int64_t tokens = 1;
  for (std::size_t i = 0; i + 1 < shape.size(); ++i) tokens *= shape[i];
  MOE_CHECK_ARG(tokens <= std::numeric_limits<std::int32_t>::max() / config.top_k, where,
                "input has ", tokens, " tokens; expected num_tokens * top_k <= 2^31 - 1 (top_k = ",
                config.top_k, ")");
  return tokens;
}

void gate_weights(const std::vector<std::int64_t>& shape, std::int64_t input_hidden,
                  const MOEConfig& config, const char* where) {
  MOE_CHECK_ARG(shape.size() == 2, where, "gate_weights has shape ", shape_to_string(shape),
                "; expected [hidden_dim, num_experts] = [", config.hidden_dim, ", ",
                config.num_experts, "]");
  // The reference API's message, verbatim, then the values.
  MOE_CHECK_ARG(shape[0] == input_hidden, where,
                "Dimension mismatch: input hidden_dim != gate_weights input_dim (input hidden_dim = ",
                input_hidden, ", gate_weights input_dim = ", shape[0], ")");
  MOE_CHECK_ARG(shape[0] == config.hidden_dim, where, "gate_weights has shape ",
                shape_to_string(shape), "; expected ", config.hidden_dim,
                " rows (config.hidden_dim)");
  MOE_CHECK_ARG(shape[1] == config.num_experts, where, "gate_weights has shape ",
                shape_to_string(shape), "; expected ", config.num_experts,
                " columns (config.num_experts)");
}

void routing_shape(const std::vector<std::int64_t>& shape, std::int64_t tokens,
                   const MOEConfig& config, const char* name, const char* where) {
  MOE_CHECK_ARG(shape.size() == 2 && shape[0] == tokens && shape[1] == config.top_k, where, name,
                " has shape ", shape_to_string(shape), "; expected [num_tokens, top_k] = [", tokens,
                ", ", config.top_k, "]");
}

void expert_indices_in_range(const std::int32_t* indices, std::int64_t tokens,
                             const MOEConfig& config, const char* where) {
  for (std::int64_t i = 0; i < tokens * config.top_k; ++i) {
    MOE_CHECK_ARG(indices[i] >= 0 && indices[i] < config.num_experts, where, "expert_indices[",
                  i / config.top_k, ", ", i % config.top_k, "] = ", indices[i],
                  "; expected an expert id in [0, ", config.num_experts, ")");
  }
}

void flat_expert_params(std::int64_t numel, const MOEConfig& config, const char* name,
                        const char* where) {
  const bool reference_layout = config.expert_kind == ExpertKind::FFN && config.expert_bias;
  MOE_CHECK_ARG(numel == config.expert_param_count(), where, name, " has ", numel, " elements; expected ",
                reference_layout ? "2*hidden_dim*expert_dim + expert_dim + hidden_dim = " : "",
                config.expert_param_count(), " for ", expert_kind_name(config.expert_kind), " experts",
                config.expert_bias ? "" : " without biases", " (hidden_dim = ", config.hidden_dim,
                ", expert_dim = ", config.expert_dim, ")");
}

}  // namespace moe::checks
