#include "moe/config.hpp"

#include <cmath>
#include <iostream>
#include <sstream>

#include "moe/error.hpp"

namespace moe {
namespace {

// A parameter tensor count for an expert of width `width` (docs/design.md §1b).
std::int64_t expert_params(const MOEConfig& c, std::int64_t width) {
  const std::int64_t in_width = (c.expert_kind == ExpertKind::GLU ? 2 : 1) * width;
  const std::int64_t weights = c.hidden_dim * in_width + width * c.hidden_dim;
  return weights + (c.expert_bias ? in_width + c.hidden_dim : 0);
}

}  // namespace

const char* activation_name(Activation activation) {
  switch (activation) {
    case Activation::ReLU: return "relu";
    case Activation::GELU: return "gelu";
    case Activation::SiLU: return "silu";
    case Activation::GELUTanh: return "gelu_tanh";
  }
  return "unknown";
}

Activation parse_activation(const std::string& name) {
  if (name == "relu") return Activation::ReLU;
  if (name == "gelu") return Activation::GELU;
  if (name == "silu") return Activation::SiLU;
  if (name == "gelu_tanh") return Activation::GELUTanh;
  detail::fail("parse_activation", "activation = \"", name, "\"; expected relu, gelu, gelu_tanh or silu");
}

const char* expert_kind_name(ExpertKind kind) { return kind == ExpertKind::GLU ? "glu" : "ffn"; }

ExpertKind parse_expert_kind(const std::string& name) {
  if (name == "ffn") return ExpertKind::FFN;
  if (name == "glu") return ExpertKind::GLU;
  detail::fail("parse_expert_kind", "expert_kind = \"", name, "\"; expected ffn or glu");
}

const char* router_name(RouterKind router) { return router == RouterKind::Sigmoid ? "sigmoid" : "softmax"; }

RouterKind parse_router(const std::string& name) {
  if (name == "softmax") return RouterKind::Softmax;
  if (name == "sigmoid") return RouterKind::Sigmoid;
  detail::fail("parse_router", "router = \"", name, "\"; expected softmax or sigmoid");
}

Activation default_activation(ExpertKind kind) {
  return kind == ExpertKind::GLU ? Activation::SiLU : Activation::ReLU;
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
  if (n_group < 1 || n_group > 64 || num_experts % n_group != 0) {
    detail::fail("MOEConfig", "Invalid config: n_group = ", n_group, "; expected a divisor of num_experts = ",
                 num_experts, " and at most 64 (1 turns group-limited routing off)");
  }
  if (topk_group < 1 || topk_group > n_group) {
    detail::fail("MOEConfig", "Invalid config: topk_group = ", topk_group, "; expected 1..n_group (n_group = ",
                 n_group, ")");
  }
  if (n_group > 1 && top_k > topk_group * (num_experts / n_group)) {
    detail::fail("MOEConfig", "Invalid config: top_k = ", top_k, " exceeds the ", topk_group * (num_experts / n_group),
                 " experts of the topk_group = ", topk_group, " groups a token may use (n_group = ", n_group,
                 ", num_experts = ", num_experts, ")");
  }
  if (!(std::isfinite(routed_scaling_factor) && routed_scaling_factor > 0.0f)) {
    detail::fail("MOEConfig", "Invalid config: routed_scaling_factor = ", routed_scaling_factor,
                 "; expected a finite value > 0");
  }
  if (!(std::isfinite(bias_update_rate) && bias_update_rate >= 0.0f)) {
    detail::fail("MOEConfig", "Invalid config: bias_update_rate = ", bias_update_rate,
                 "; expected a finite value >= 0 (0 turns the bias update off)");
  }
  if (shared_expert_dim < 0 || (shared_expert_dim > 0 && hidden_dim > (std::int64_t{1} << 50) / shared_expert_dim)) {
    detail::fail("MOEConfig", "Invalid config: shared_expert_dim = ", shared_expert_dim,
                 "; expected 0 (no shared expert) or a positive width with hidden_dim * shared_expert_dim <= 2^50");
  }
  if (shared_gate && shared_expert_dim == 0) {
    detail::fail("MOEConfig", "Invalid config: shared_gate = true but shared_expert_dim = 0; the gate scales a "
                 "shared expert, so set shared_expert_dim > 0 or turn shared_gate off");
  }
}

std::int64_t MOEConfig::expert_param_count() const { return expert_params(*this, expert_dim); }

std::int64_t MOEConfig::shared_expert_param_count() const {
  return shared_expert_dim > 0 ? expert_params(*this, shared_expert_dim) : 0;
}

std::string MOEConfig::to_string() const {
  std::ostringstream out;
  out << "E=" << num_experts << " k=" << top_k << " H=" << hidden_dim << " F=" << expert_dim
      << " cf=" << capacity_factor << ' ';
  if (expert_kind != ExpertKind::FFN) out << expert_kind_name(expert_kind) << ' ';
  out << activation_name(activation) << (expert_bias ? "" : " no-bias")
      << (normalize_top_k ? " normalize" : " raw-weights") << (drop_tokens ? " drop" : " dropless");
  if (router != RouterKind::Softmax) out << ' ' << router_name(router) << " bias-rate=" << bias_update_rate;
  if (n_group > 1) out << " groups=" << topk_group << '/' << n_group;
  if (routed_scaling_factor != 1.0f) out << " scale=" << routed_scaling_factor;
  if (shared_expert_dim > 0) out << " shared=" << shared_expert_dim << (shared_gate ? " gated" : "");
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
