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

void add_device_options(CLI::App* command, DeviceOptions& options) {
  command->add_option("--device", options.device, "where the layer computes: cpu, or cuda (the GPU of the local rank)")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  command->add_option("--precision", options.precision, "GPU expert GEMMs: fp32, tf32 or bf16")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "tf32", "bf16"}));
}

void apply_device_options(const DeviceOptions& options, LayerOptions& layer) {
  layer.device = options.device == "cuda" ? Device::CUDA : Device::CPU;
  layer.precision = options.precision == "tf32"   ? Precision::TF32
                    : options.precision == "bf16" ? Precision::BF16
                                                  : Precision::FP32;
}

}  // namespace moe::cli
