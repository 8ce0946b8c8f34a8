#include <cstdio>

#include <moe/moe.hpp>

int main() {
  const moe::MOEConfig config(4, 2, 8, 16);
  moe::Tensor<float> input(3, 8), gate(8, 4);
  for (auto& v : input) v = 0.5f;
  std::vector<moe::Tensor<float>> experts(4, moe::Tensor<float>(config.expert_param_count()));
  auto [weights, indices, loss] = moe::moe_gating_forward(input, gate, config);
  const auto out = moe::moe_expert_computation(input, weights, indices, experts, config);
  std::printf("consumer: output %s, load balancing loss %.3f\n", moe::shape_to_string(out.shape()).c_str(), loss[0]);
  return out.numel() == 24 ? 0 : 1;
}
