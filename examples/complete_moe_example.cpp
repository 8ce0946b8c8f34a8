// The reference API's "Complete MOE Forward Pass" example, in C++: route a
// [4, 32, 512] batch through 8 experts (top-2) and print the load-balancing loss.
#include <cstdio>
#include <random>
#include <vector>

#include <moe/moe.hpp>

using namespace moe;

static void fill_normal(Tensor<FLOAT_TYPE>& t, float stddev, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, stddev);
  for (auto& v : t) v = normal(rng);
}

int main() try {
  // Configuration
  const MOEConfig config(8, 2, 512, 2048);

  // Input data
  const int batch_size = 4;
  const int seq_len = 32;
  Tensor<FLOAT_TYPE> input(batch_size, seq_len, config.hidden_dim);
  Tensor<FLOAT_TYPE> gate_weights(config.hidden_dim, config.num_experts);

  std::mt19937 rng(42);
  fill_normal(input, 1.0f, rng);
  fill_normal(gate_weights, 0.05f, rng);

  // Expert parameters: one flat [W1, W2, b1, b2] tensor per expert.
  std::vector<Tensor<FLOAT_TYPE>> expert_params;
  for (int i = 0; i < config.num_experts; ++i) {
    const auto param_size = config.hidden_dim * config.expert_dim * 2 + config.expert_dim + config.hidden_dim;
    Tensor<FLOAT_TYPE> params(param_size);
    fill_normal(params, 0.02f, rng);
    expert_params.push_back(std::move(params));
  }

  // Forward pass
  auto [expert_weights, expert_indices, load_loss] = moe_gating_forward(input, gate_weights, config);
  Tensor<FLOAT_TYPE> output =
      moe_expert_computation(input, expert_weights, expert_indices, expert_params, config);

  std::printf("MOE forward pass completed!\n");
  std::printf("Output shape: %s\n", shape_to_string(output.shape()).c_str());
  std::printf("Load balancing loss: %.6f\n", load_loss[0]);
  return 0;
} catch (const moe::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
