#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "moe/communicator.hpp"
#include "moe/layer.hpp"
#include "moe/moe.hpp"
#include "support/test_util.hpp"

using moe::MOEConfig;

TEST(Config, DefaultsFollowTheReferenceApi) {
  const MOEConfig c(8, 2, 512, 2048);
  EXPECT_EQ(c.num_experts, 8);
  EXPECT_EQ(c.top_k, 2);
  EXPECT_EQ(c.hidden_dim, 512);
  EXPECT_EQ(c.expert_dim, 2048);
  EXPECT_FLOAT_EQ(c.capacity_factor, 1.25f);
  EXPECT_TRUE(c.normalize_top_k);
  EXPECT_TRUE(c.drop_tokens);
  EXPECT_EQ(c.activation, moe::Activation::ReLU);
  EXPECT_EQ(c.expert_param_count(), 2 * 512 * 2048 + 2048 + 512);
  EXPECT_NO_THROW(c.validate());
  EXPECT_TRUE(moe::validate_config(c));
}

TEST(Config, TopKAboveNumExpertsKeepsTheReferenceMessage) {
  EXPECT_MOE_ERROR(MOEConfig(8, 9, 64, 256).validate(),
                   "Invalid config: top_k must be <= num_experts", "top_k = 9", "num_experts = 8");
}

TEST(Config, TopKBelowOne) {
  EXPECT_MOE_ERROR(MOEConfig(8, 0, 64, 256).validate(), "top_k = 0", "1..num_experts");
  EXPECT_MOE_ERROR(MOEConfig(8, -3, 64, 256).validate(), "top_k = -3");
}

TEST(Config, FewerThanTwoExperts) {
  EXPECT_MOE_ERROR(MOEConfig(1, 1, 64, 256).validate(), "num_experts = 1", ">= 2");
}

TEST(Config, NonPositiveDimensions) {
  EXPECT_MOE_ERROR(MOEConfig(8, 2, 0, 256).validate(), "hidden_dim = 0", "positive");
  EXPECT_MOE_ERROR(MOEConfig(8, 2, -64, 256).validate(), "hidden_dim = -64");
  EXPECT_MOE_ERROR(MOEConfig(8, 2, 64, 0).validate(), "expert_dim = 0", "positive");
}

TEST(Config, CapacityFactorOutsideOneToTwo) {
  EXPECT_MOE_ERROR(MOEConfig(8, 2, 64, 256, 0.99f).validate(), "capacity_factor = 0.99", "[1.0, 2.0]");
  EXPECT_MOE_ERROR(MOEConfig(8, 2, 64, 256, 2.5f).validate(), "capacity_factor = 2.5");
  EXPECT_MOE_ERROR(MOEConfig(8, 2, 64, 256, std::nanf("")).validate(), "capacity_factor = nan");
  EXPECT_NO_THROW(MOEConfig(8, 2, 64, 256, 1.0f).validate());
  EXPECT_NO_THROW(MOEConfig(8, 2, 64, 256, 2.0f).validate());
}

TEST(Config, RecommendedRangesAreAdviceNotErrors) {
  // docs/design.md §1: 256 experts and hidden 7168 are real models.
  EXPECT_NO_THROW(MOEConfig(256, 8, 7168, 2048).validate());
  EXPECT_NO_THROW(MOEConfig(2, 1, 8, 16).validate());
}

TEST(Config, ValidateConfigPrintsAndReturnsFalse) {
  testing::internal::CaptureStderr();
  EXPECT_FALSE(moe::validate_config(MOEConfig(4, 5, 64, 256)));
  const std::string printed = testing::internal::GetCapturedStderr();
  EXPECT_NE(printed.find("top_k must be <= num_experts"), std::string::npos) << printed;
}

TEST(Config, ActivationNamesRoundTrip) {
  for (auto a : {moe::Activation::ReLU, moe::Activation::GELU, moe::Activation::SiLU, moe::Activation::GELUTanh})
    EXPECT_EQ(moe::parse_activation(moe::activation_name(a)), a);
  EXPECT_MOE_ERROR(moe::parse_activation("tanh"), "activation = \"tanh\"", "relu, gelu, gelu_tanh or silu");
}

// The layer's device and precision options, on a machine without a GPU (as CI's): the
// error names the option, its value and why it cannot be had, which differs between a
// build with the CUDA backend and one without (MOE_TEST_BUILT_WITH_CUDA, set by CMake
// from the build's own switch, not asked of the library). With a GPU visible the cuda
// case skips: tests/cuda/ holds the layer there.
TEST(LayerOptions, ADeviceOrPrecisionThisMachineLacksIsAnErrorSayingWhy) {
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  const MOEConfig config(4, 2, 8, 8);
  moe::LayerOptions bf16_on_cpu;
  bf16_on_cpu.precision = moe::Precision::BF16;
  EXPECT_MOE_ERROR(moe::MoELayer(config, *comm, 1, bf16_on_cpu), "MoELayer", "options.precision = bf16 on the CPU",
                   "expected fp32");
  moe::LayerOptions on_gpu;
  on_gpu.device = moe::Device::CUDA;
  if (moe::cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is visible";
  EXPECT_MOE_ERROR(moe::MoELayer(config, *comm, 1, on_gpu), "MoELayer", "options.device = cuda but ",
                   MOE_TEST_BUILT_WITH_CUDA ? "no CUDA device is visible" : "this moe was built without CUDA");
}
