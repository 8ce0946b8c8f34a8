// Every bad input of the single-process API raises moe::Error naming the argument,
// its value and what was expected.
#include <gtest/gtest.h>

#include "moe/moe.hpp"
#include "support/test_util.hpp"

using moe::MOEConfig;
using moe::Tensor;
using moe::testing::random_tensor;

namespace {

class BadInput : public ::testing::Test {
 protected:
  MOEConfig config{4, 2, 16, 32};
  Tensor<float> x = random_tensor({5, 16}, 1.0, 1);
  Tensor<float> wg = random_tensor({16, 4}, 1.0, 2);
  Tensor<float> weights = Tensor<float>({5, 2});
  Tensor<std::int32_t> indices = Tensor<std::int32_t>({5, 2});
  std::vector<Tensor<float>> experts = std::vector<Tensor<float>>(4, Tensor<float>({config.expert_param_count()}));
};

TEST_F(BadInput, InvalidConfigsAreRejectedByEveryFunction) {
  const MOEConfig too_many_k(4, 5, 16, 32);
  EXPECT_MOE_ERROR(moe::moe_gating_forward(x, wg, too_many_k), "Invalid config: top_k must be <= num_experts");
  EXPECT_MOE_ERROR(moe::moe_expert_computation(x, weights, indices, experts, too_many_k),
                   "Invalid config: top_k must be <= num_experts");
  EXPECT_MOE_ERROR(moe::compute_load_balancing_loss(Tensor<float>({5, 4}), indices, MOEConfig(4, 0, 16, 32)),
                   "top_k = 0");
  EXPECT_MOE_ERROR(moe::apply_expert_ffn(x, experts[0], MOEConfig(1, 1, 16, 32)), "num_experts = 1");
  EXPECT_MOE_ERROR(moe::moe_gating_forward(x, wg, MOEConfig(4, 2, 0, 32)), "hidden_dim = 0");
  EXPECT_MOE_ERROR(moe::moe_gating_forward(x, wg, MOEConfig(4, 2, 16, -1)), "expert_dim = -1");
  EXPECT_MOE_ERROR(moe::moe_gating_forward(x, wg, MOEConfig(4, 2, 16, 32, 3.0f)), "capacity_factor = 3");
}

TEST_F(BadInput, InputHiddenSizeDiffersFromGateRows) {
  const Tensor<float> x24 = random_tensor({5, 24}, 1.0, 3);
  EXPECT_MOE_ERROR(moe::moe_gating_forward(x24, wg, config),
                   "Dimension mismatch: input hidden_dim != gate_weights input_dim",
                   "input hidden_dim = 24", "gate_weights input_dim = 16");
}

TEST_F(BadInput, InputHiddenSizeDiffersFromConfig) {
  const Tensor<float> x24 = random_tensor({5, 24}, 1.0, 3);
  const Tensor<float> wg24 = random_tensor({24, 4}, 1.0, 3);
  EXPECT_MOE_ERROR(moe::moe_gating_forward(x24, wg24, config), "gate_weights has shape [24, 4]",
                   "config.hidden_dim");
  EXPECT_MOE_ERROR(moe::moe_expert_computation(x24, weights, indices, experts, config),
                   "input shape [5, 24]", "config.hidden_dim = 16");
  EXPECT_MOE_ERROR(moe::apply_expert_ffn(x24, experts[0], config), "input shape [5, 24]");
}

TEST_F(BadInput, GateColumnsDifferFromNumExperts) {
  EXPECT_MOE_ERROR(moe::moe_gating_forward(x, random_tensor({16, 5}, 1.0, 4), config),
                   "gate_weights has shape [16, 5]", "expected 4 columns");
  EXPECT_MOE_ERROR(moe::moe_gating_forward(x, Tensor<float>({16}), config), "gate_weights has shape [16]",
                   "[hidden_dim, num_experts] = [16, 4]");
}

TEST_F(BadInput, InputRankNotTwoOrThree) {
  EXPECT_MOE_ERROR(moe::moe_gating_forward(Tensor<float>({16}), wg, config), "input has shape [16] (rank 1)",
                   "[num_tokens, hidden_dim]");
  EXPECT_MOE_ERROR(moe::moe_expert_computation(Tensor<float>({1, 1, 5, 16}), weights, indices, experts, config),
                   "input has shape [1, 1, 5, 16] (rank 4)");
  EXPECT_MOE_ERROR(moe::apply_expert_ffn(Tensor<float>({16}), experts[0], config), "(rank 1)");
}

TEST_F(BadInput, ExpertParamsCountDiffersFromNumExperts) {
  experts.pop_back();
  EXPECT_MOE_ERROR(moe::moe_expert_computation(x, weights, indices, experts, config),
                   "expert_params has 3 tensors", "num_experts = 4");
}

TEST_F(BadInput, FlatParamLengthIsWrong) {
  experts[2] = Tensor<float>({config.expert_param_count() - 1});
  EXPECT_MOE_ERROR(moe::moe_expert_computation(x, weights, indices, experts, config),
                   "expert_params[2] has 1071 elements", "= 1072");
  EXPECT_MOE_ERROR(moe::apply_expert_ffn(x, experts[2], config), "expert_weights has 1071 elements");
}

TEST_F(BadInput, WeightsOrIndicesNotTokensByTopK) {
  EXPECT_MOE_ERROR(moe::moe_expert_computation(x, Tensor<float>({5, 3}), indices, experts, config),
                   "expert_weights has shape [5, 3]", "[num_tokens, top_k] = [5, 2]");
  EXPECT_MOE_ERROR(moe::moe_expert_computation(x, weights, Tensor<std::int32_t>({4, 2}), experts, config),
                   "expert_indices has shape [4, 2]", "[5, 2]");
  EXPECT_MOE_ERROR(moe::moe_expert_computation(x, Tensor<float>({10}), indices, experts, config),
                   "expert_weights has shape [10]");
}

TEST_F(BadInput, IndexOutsideTheExperts) {
  indices[7] = 4;
  EXPECT_MOE_ERROR(moe::moe_expert_computation(x, weights, indices, experts, config),
                   "expert_indices[3, 1] = 4", "[0, 4)");
  indices[7] = -1;
  EXPECT_MOE_ERROR(moe::compute_load_balancing_loss(Tensor<float>({5, 4}), indices, config),
                   "expert_indices[3, 1] = -1");
}

TEST_F(BadInput, GateProbsNotTokensByExperts) {
  EXPECT_MOE_ERROR(moe::compute_load_balancing_loss(Tensor<float>({5, 3}), indices, config),
                   "gate_probs has shape [5, 3]", "[num_tokens, num_experts]");
  EXPECT_MOE_ERROR(moe::compute_load_balancing_loss(Tensor<float>({6, 4}), indices, config),
                   "expert_indices has shape [5, 2]", "[6, 2]");
}

}  // namespace
