#include "launch/command.hpp"

namespace moe::cli {

void add_config_options(CLI::App* command, MOEConfig& config, std::string& activation) {
  command->add_option("--experts", config.num_experts, "number of experts (E)")->capture_default_str();
  command->add_option("--top-k", config.top_k, "experts per token (k)")->capture_default_str();
  command->add_option("--hidden", config.hidden_dim, "hidden size (H)")->capture_default_str();
  command->add_option("--expert-dim", config.expert_dim, "expert FFN size (F)")->capture_default_str();
  command->add_option("--capacity-factor", config.capacity_factor, "capacity factor, 1.0 to 2.0")->capture_default_str();
  command->add_option("--activation", activation, "relu, gelu or silu")
      ->capture_default_str()
      ->check(CLI::IsMember({"relu", "gelu", "silu"}));
  command->add_flag("--dropless", [&config](std::int64_t) { config.drop_tokens = false; },
                    "keep every assignment (no capacity limit)");
  command->add_flag("--raw-weights", [&config](std::int64_t) { config.normalize_top_k = false; },
                    "use the raw softmax probabilities as weights instead of renormalising the top k");
}

}  // namespace moe::cli
