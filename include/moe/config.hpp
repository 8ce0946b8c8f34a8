// MOEConfig: the shape and routing options of one MoE layer (DESIGN §1), named as in
// the reference API.
#pragma once

#include <cstdint>
#include <string>

namespace moe {

enum class Activation { ReLU, GELU, SiLU };

// "relu", "gelu", "silu"; parse_activation throws moe::Error on any other name.
const char* activation_name(Activation activation);
Activation parse_activation(const std::string& name);

struct MOEConfig {
  std::int64_t num_experts = 8;
  std::int64_t top_k = 2;
  std::int64_t hidden_dim = 512;
  std::int64_t expert_dim = 2048;
  float capacity_factor = 1.25f;
  // Divide the k selected probabilities by their sum (true), or keep the raw softmax values.
  bool normalize_top_k = true;
  // Apply the per-expert capacity and drop what exceeds it (true), or keep every assignment.
  bool drop_tokens = true;
  // GELU is the exact (erf) form; SiLU is x * sigmoid(x).
  Activation activation = Activation::ReLU;

  MOEConfig() = default;
  MOEConfig(std::int64_t num_experts, std::int64_t top_k, std::int64_t hidden_dim,
            std::int64_t expert_dim, float capacity_factor = 1.25f)
      : num_experts(num_experts),
        top_k(top_k),
        hidden_dim(hidden_dim),
        expert_dim(expert_dim),
        capacity_factor(capacity_factor) {}

  // Throws moe::Error naming the first invalid field, its value and the valid range.
  void validate() const;

  // Elements of one expert's flat parameter tensor [W1, W2, b1, b2]: 2·H·F + F + H.
  std::int64_t expert_param_count() const {
    return 2 * hidden_dim * expert_dim + expert_dim + hidden_dim;
  }

  // A one-line description, e.g. "E=8 k=2 H=512 F=2048 cf=1.25 relu normalize drop".
  std::string to_string() const;
};

// The reference API's check: prints the problem to stderr and returns false if the
// config is invalid, true otherwise.
bool validate_config(const MOEConfig& config);

}  // namespace moe
