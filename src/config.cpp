#include "moe/config.hpp"

#include <cmath>
#include <iostream>
#include <sstream>

#include "moe/error.hpp"

namespace moe {

const char* activation_name(Activation activation) {
  switch (activation) {
    case Activation::ReLU: return "relu";
    case Activation::GELU: return "gelu";
    case Activation::SiLU: return "silu";
  }
  return "unknown";
}

Activation parse_activation(const std::string& name) {
  if (name == "relu") return Activation::ReLU;
  if (name == "gelu") return Activation::GELU;
  if (name == "silu") return Activation::SiLU;
  detail::fail("parse_activation", "activation = \"", name, "\"; expected relu, gelu or silu");
}

void MOEConfig::validate() const {
  // The first two messages start with the reference API's words, kept verbatim.
  if (top_k > num_experts) {
    detail::fail("MOEConfig", "Invalid config: top_k must be <= num_experts (top_k = ", top_k,
                 ", num_experts = ", num_experts, "; valid range 1..num_experts)");
  }
  if (top_k < 1) {
    detail::fail("MOEConfig", "Invalid config: top_k = ", top_k,
                 "; expected 1..num_experts (num_experts = ", num_experts, ")");
  }
  if (num_experts < 2) {
    detail::fail("MOEConfig", "Invalid config: num_experts = ", num_experts, "; expected >= 2");
  }
  if (hidden_dim <= 0) {
    detail::fail("MOEConfig", "Invalid config: hidden_dim = ", hidden_dim,
                 "; dimensions must be positive");
  }
  if (expert_dim <= 0) {
    detail::fail("MOEConfig", "Invalid config: expert_dim = ", expert_dim,
                 "; dimensions must be positive");
  }
  // Written so that NaN fails too.
  if (!(capacity_factor >= 1.0f && capacity_factor <= 2.0f)) {
    detail::fail("MOEConfig", "Invalid config: capacity_factor = ", capacity_factor,
                 "; expected a value in [1.0, 2.0]");
  }
  // Flat parameter offsets and element counts are int64; keep 2·H·F well inside it.
  if (hidden_dim > (std::int64_t{1} << 50) / expert_dim) {
    detail::fail("MOEConfig", "Invalid config: hidden_dim * expert_dim = ", hidden_dim, " * ",
                 expert_dim, " is too large; expected at most 2^50");
  }
}

std::string MOEConfig::to_string() const {
  std::ostringstream out;
  out << "E=" << num_experts << " k=" << top_k << " H=" << hidden_dim << " F=" << expert_dim
      << " cf=" << capacity_factor << ' ' << activation_name(activation)
      << (normalize_top_k ? " normalize" : " raw-weights")
      << (drop_tokens ? " drop" : " dropless");
  return out.str();
}

bool validate_config(const MOEConfig& config) {
  try {
    config.validate();
    return true;
  } catch (const Error& e) {
    std::cerr << "Error: " << e.what() << '\n';
    return false;
  }
}

}  // namespace moe
