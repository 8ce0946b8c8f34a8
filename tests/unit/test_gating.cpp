// moe_gating_forward and compute_load_balancing_loss against the float64 reference,
// and the routing properties docs/design.md §1 promises.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>

#include "moe/moe.hpp"
#include "support/reference_moe.hpp"
#include "support/test_util.hpp"

using moe::MOEConfig;
using moe::Tensor;
using moe::testing::random_tensor;
using moe::testing::relative_error;

namespace {

struct GatingCase {
  std::int64_t E, k, H, T;
  bool normalize;
  std::string name() const {
    return "E" + std::to_string(E) + "_k" + std::to_string(k) + "_H" + std::to_string(H) + "_T" +
           std::to_string(T) + (normalize ? "_normalized" : "_raw");
  }
};

void PrintTo(const GatingCase& c, std::ostream* os) { *os << c.name(); }

class GatingMatchesReference : public ::testing::TestWithParam<GatingCase> {};

TEST_P(GatingMatchesReference, WeightsIndicesAndLoss) {
  const GatingCase p = GetParam();
  MOEConfig config(p.E, p.k, p.H, 32);
  config.normalize_top_k = p.normalize;
  const std::uint64_t seed = 1000 + p.E * 7 + p.k * 13 + p.T;
  const Tensor<float> x = random_tensor({p.T, p.H}, 1.0, seed);
  const Tensor<float> wg = random_tensor({p.H, p.E}, 1.0 / std::sqrt(double(p.H)), seed + 1);

  auto [weights, indices, loss] = moe::moe_gating_forward(x, wg, config);
  const auto ref = moe::reference::route(x.data(), p.T, wg.data(), config);
  // A near-tie at the k-th place could make float32 and float64 choose differently;
  // these seeds have none, and this guards that.
  ASSERT_GT(ref.min_selection_gap, 1e-6);

  ASSERT_EQ(weights.shape(), (std::vector<std::int64_t>{p.T, p.k}));
  ASSERT_EQ(indices.shape(), (std::vector<std::int64_t>{p.T, p.k}));
  ASSERT_EQ(loss.shape(), std::vector<std::int64_t>{1});
  for (std::int64_t i = 0; i < p.T * p.k; ++i) ASSERT_EQ(indices[i], ref.indices[i]) << "assignment " << i;
  EXPECT_LE(relative_error(weights.data(), ref.weights.data(), p.T * p.k), 1e-5);
  EXPECT_LE(std::abs(loss[0] - ref.aux_loss), 1e-5 * std::max(1.0, ref.aux_loss));

  const Tensor<float> probs = moe::moe_gate_probabilities(x, wg, config);
  EXPECT_LE(relative_error(probs.data(), ref.probs.data(), p.T * p.E), 1e-5);
  const Tensor<float> loss_again = moe::compute_load_balancing_loss(probs, indices, config);
  EXPECT_NEAR(loss_again[0], loss[0], 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Shapes, GatingMatchesReference,
                         ::testing::Values(GatingCase{2, 1, 16, 1, true}, GatingCase{2, 2, 16, 7, true},
                                           GatingCase{8, 2, 64, 33, true}, GatingCase{8, 2, 64, 33, false},
                                           GatingCase{8, 8, 32, 17, true}, GatingCase{64, 1, 32, 19, true},
                                           GatingCase{64, 8, 48, 101, false}, GatingCase{64, 64, 16, 5, true}),
                         [](const auto& info) { return info.param.name(); });

TEST(Gating, WeightsSumToOneAndIndicesAreDistinctAndInRange) {
  const MOEConfig config(16, 4, 32, 64);
  const Tensor<float> x = random_tensor({4, 25, 32}, 3.0, 7);
  const Tensor<float> wg = random_tensor({32, 16}, 0.5, 8);
  auto [weights, indices, loss] = moe::moe_gating_forward(x, wg, config);
  ASSERT_EQ(weights.shape(), (std::vector<std::int64_t>{100, 4}));  // [B,S,H] → T = B·S
  for (std::int64_t t = 0; t < 100; ++t) {
    double sum = 0;
    std::set<int> seen;
    for (std::int64_t j = 0; j < 4; ++j) {
      sum += weights[t * 4 + j];
      EXPECT_GE(indices[t * 4 + j], 0);
      EXPECT_LT(indices[t * 4 + j], 16);
      seen.insert(indices[t * 4 + j]);
      if (j > 0) EXPECT_GE(weights[t * 4 + j - 1], weights[t * 4 + j]) << "slots by descending prob";
    }
    EXPECT_NEAR(sum, 1.0, 1e-6);
    EXPECT_EQ(seen.size(), 4u);
  }
}

TEST(Gating, TiesGoToTheLowerExpertIndex) {
  // Zero gate weights: every probability is exactly 1/E, so every choice is a tie.
  const MOEConfig config(8, 3, 16, 32);
  const Tensor<float> x = random_tensor({5, 16}, 1.0, 3);
  Tensor<float> wg({16, 8});
  auto [weights, indices, loss] = moe::moe_gating_forward(x, wg, config);
  for (std::int64_t t = 0; t < 5; ++t)
    for (std::int64_t j = 0; j < 3; ++j) {
      EXPECT_EQ(indices[t * 3 + j], j);
      EXPECT_FLOAT_EQ(weights[t * 3 + j], 1.0f / 3.0f);
    }

  // Columns 2 and 5 identical and largest: the pair is chosen as (2, 5), in that order.
  Tensor<float> tied({16, 8});
  for (std::int64_t h = 0; h < 16; ++h) tied[h * 8 + 2] = tied[h * 8 + 5] = 1.0f;
  Tensor<float> ones({3, 16});
  for (auto& v : ones) v = 0.25f;
  auto [w2, i2, l2] = moe::moe_gating_forward(ones, tied, MOEConfig(8, 2, 16, 32));
  for (std::int64_t t = 0; t < 3; ++t) {
    EXPECT_EQ(i2[t * 2], 2);
    EXPECT_EQ(i2[t * 2 + 1], 5);
  }
}

TEST(LoadBalancingLoss, IsOneForExactlyUniformRouting) {
  const std::int64_t E = 8, k = 2, T = 16;
  const MOEConfig config(E, k, 16, 32);
  Tensor<float> probs({T, E});
  for (auto& p : probs) p = 1.0f / E;
  Tensor<std::int32_t> indices({T, k});
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t j = 0; j < k; ++j) indices[t * k + j] = static_cast<std::int32_t>((t * k + j) % E);
  EXPECT_NEAR(moe::compute_load_balancing_loss(probs, indices, config)[0], 1.0f, 1e-6);
}

TEST(LoadBalancingLoss, IsNumExpertsWhenEveryTokenPicksOneExpertWithCertainty) {
  const std::int64_t E = 8;
  const MOEConfig config(E, 1, 16, 32);
  Tensor<float> probs({10, E});
  Tensor<std::int32_t> indices({10, 1});
  for (std::int64_t t = 0; t < 10; ++t) probs[t * E + 3] = 1.0f, indices[t] = 3;
  EXPECT_NEAR(moe::compute_load_balancing_loss(probs, indices, config)[0], float(E), 1e-5);

  // Through the gate: a huge logit on expert 3 gives probability 1 in float32.
  Tensor<float> x({10, 16});
  for (auto& v : x) v = 1.0f;
  Tensor<float> wg({16, E});
  for (std::int64_t h = 0; h < 16; ++h) wg[h * E + 3] = 100.0f;
  auto [w, i, loss] = moe::moe_gating_forward(x, wg, config);
  EXPECT_NEAR(loss[0], float(E), 1e-5);
}

TEST(Gating, EmptyInputGivesEmptyOutputsAndZeroLoss) {
  const MOEConfig config(8, 2, 16, 32);
  const Tensor<float> x({0, 16});
  const Tensor<float> wg = random_tensor({16, 8}, 1.0, 1);
  auto [weights, indices, loss] = moe::moe_gating_forward(x, wg, config);
  EXPECT_EQ(weights.shape(), (std::vector<std::int64_t>{0, 2}));
  EXPECT_EQ(indices.shape(), (std::vector<std::int64_t>{0, 2}));
  EXPECT_EQ(loss[0], 0.0f);
  EXPECT_EQ(moe::compute_load_balancing_loss(Tensor<float>({0, 8}), indices, config)[0], 0.0f);
}

TEST(Gating, NonFiniteInputGivesValidIndicesAndNaNWeights) {
  const std::int64_t E = 8, k = 3, H = 16;
  const MOEConfig config(E, k, H, 32);
  Tensor<float> x = random_tensor({4, H}, 1.0, 11);
  const Tensor<float> wg = random_tensor({H, E}, 1.0, 12);
  x[1 * H + 5] = std::numeric_limits<float>::quiet_NaN();
  x[2 * H + 0] = std::numeric_limits<float>::infinity();
  x[3 * H + 9] = -std::numeric_limits<float>::infinity();
  auto [weights, indices, loss] = moe::moe_gating_forward(x, wg, config);
  for (std::int64_t t = 0; t < 4; ++t) {
    std::set<int> seen;
    for (std::int64_t j = 0; j < k; ++j) {
      const int e = indices[t * k + j];
      EXPECT_GE(e, 0);
      EXPECT_LT(e, E);
      seen.insert(e);
    }
    EXPECT_EQ(seen.size(), std::size_t(k)) << "token " << t;
  }
  // Token 0 is finite and unaffected; token 1's row is all NaN, so the lowest ids.
  for (std::int64_t j = 0; j < k; ++j) {
    EXPECT_TRUE(std::isfinite(weights[j]));
    EXPECT_EQ(indices[k + j], j);
    EXPECT_TRUE(std::isnan(weights[k + j]));
  }
  EXPECT_TRUE(std::isnan(loss[0]));
}

}  // namespace
