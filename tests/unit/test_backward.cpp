// Every gradient of the layer against central finite differences of the float64
// training loss (routing held fixed), for each activation, with dropping on and off,
// with and without weight normalisation, including the aux-loss and z-loss terms.
// Tolerance: 1e-4 normwise relative, per tensor, so one wrong gradient fails.
#include <gtest/gtest.h>

#include <cmath>

#include "dispatch_plan.hpp"
#include "moe/layer.hpp"
#include "support/reference_loss.hpp"
#include "support/test_util.hpp"

using moe::Activation;
using moe::MOEConfig;
using moe::Tensor;

namespace {

struct GradCase {
  Activation act;
  bool drop, normalize;
  float aux_coef, z_coef;
  std::string name() const {
    return std::string(moe::activation_name(act)) + (drop ? "_drop" : "_dropless") +
           (normalize ? "_normalized" : "_raw") + (aux_coef > 0 ? "_aux" : "") + (z_coef > 0 ? "_z" : "");
  }
};

void PrintTo(const GradCase& c, std::ostream* os) { *os << c.name(); }

class Gradients : public ::testing::TestWithParam<GradCase> {};

TEST_P(Gradients, MatchFiniteDifferencesOfTheFloat64Loss) {
  const GradCase p = GetParam();
  MOEConfig config(4, 2, 6, 10, 1.0f);
  config.activation = p.act;
  config.drop_tokens = p.drop;
  config.normalize_top_k = p.normalize;
  const std::int64_t T = 11, H = 6, E = 4;
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::LayerOptions options;
  options.aux_loss_coef = p.aux_coef;
  options.z_loss_coef = p.z_coef;
  moe::MoELayer layer(config, *comm, 21, options);
  // A peaky router, so that capacity 1.0 drops some assignments.
  layer.set_gate_weights(moe::testing::random_tensor({H, E}, 1.5, 22));
  const Tensor<float> x = moe::testing::random_tensor({T, H}, 1.0, 23);
  const Tensor<float> c = moe::testing::random_tensor({T, H}, 1.0, 24);

  const moe::ForwardResult fwd = layer.forward(x, moe::Pass::Training);
  const Tensor<float> dx = layer.backward(c);

  // The same point in float64, routing fixed to what the layer chose.
  std::vector<std::int32_t> indices(fwd.expert_indices.begin(), fwd.expert_indices.end());
  const moe::DispatchPlan plan = moe::make_dispatch_plan(indices.data(), T, config);
  std::vector<bool> kept(plan.kept.begin(), plan.kept.end());
  if (p.drop) ASSERT_GT(plan.dropped, 0) << "meant to exercise dropping";
  const Tensor<float> g32 = layer.gate_weights();
  moe::reference::Params params;
  params.gate.assign(g32.begin(), g32.end());
  std::vector<double> xs(x.begin(), x.end()), cs(c.begin(), c.end());
  for (std::int64_t e = 0; e < E; ++e) {
    const Tensor<float> f = layer.expert_params(e);
    params.experts.emplace_back(f.begin(), f.end());
  }
  const moe::reference::LossTerms terms{p.aux_coef, p.z_coef};
  auto loss = [&] { return moe::reference::training_loss(params, xs, T, indices, kept, cs, config, terms); };

  const Tensor<float> gate_grad = layer.gate_grad();
  EXPECT_LE(moe::testing::relative_error(gate_grad.data(), moe::reference::numeric_gradient(params.gate, loss).data(),
                                         gate_grad.numel()),
            1e-4)
      << "gate";
  EXPECT_LE(moe::testing::relative_error(dx.data(), moe::reference::numeric_gradient(xs, loss).data(), dx.numel()), 1e-4) << "input";
  const char* names[] = {"W1", "W2", "b1", "b2"};
  const std::int64_t F = 10, offsets[] = {0, H * F, 2 * H * F, 2 * H * F + F, 2 * H * F + F + H};
  for (std::int64_t e = 0; e < E; ++e) {
    const Tensor<float> grad = layer.expert_grad(e);
    const std::vector<double> numeric = moe::reference::numeric_gradient(params.experts[e], loss);
    for (int i = 0; i < 4; ++i)
      EXPECT_LE(moe::testing::relative_error(grad.data() + offsets[i], numeric.data() + offsets[i],
                                             offsets[i + 1] - offsets[i]),
                1e-4)
          << "expert " << e << " " << names[i];
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, Gradients,
                         ::testing::Values(GradCase{Activation::ReLU, true, true, 0.3f, 0.2f},
                                           GradCase{Activation::ReLU, false, true, 0.0f, 0.0f},
                                           GradCase{Activation::GELU, true, false, 0.3f, 0.0f},
                                           GradCase{Activation::GELU, false, true, 0.0f, 0.2f},
                                           GradCase{Activation::SiLU, true, true, 0.0f, 0.0f},
                                           GradCase{Activation::SiLU, false, false, 0.3f, 0.2f}),
                         [](const auto& info) { return info.param.name(); });

TEST(Backward, FullyDroppedTokensGetNoInputGradientAndGradientsAccumulate) {
  // Every token's first choice is expert 0 and capacity is 2 of 6 tokens: tokens 2..5
  // lose slot 0; with k = 1 they are fully dropped.
  MOEConfig config(4, 1, 8, 12, 1.0f);
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::LayerOptions options;
  options.aux_loss_coef = 0.0f;
  moe::MoELayer layer(config, *comm, 1, options);
  Tensor<float> gate({8, 4});
  for (std::int64_t h = 0; h < 8; ++h) gate[h * 4] = 5.0f;
  layer.set_gate_weights(gate);
  Tensor<float> x = moe::testing::random_tensor({6, 8}, 0.1, 2);
  for (auto& v : x) v = std::abs(v) + 0.1f;  // positive, so expert 0 wins
  const Tensor<float> c = moe::testing::random_tensor({6, 8}, 1.0, 3);
  const auto fwd = layer.forward(x, moe::Pass::Training);
  EXPECT_EQ(fwd.stats.dropped, 4);
  const Tensor<float> dx = layer.backward(c);
  for (std::int64_t t = 2; t < 6; ++t)
    for (std::int64_t h = 0; h < 8; ++h) EXPECT_EQ(dx[t * 8 + h], 0.0f) << "token " << t;
  double kept_norm = 0;
  for (std::int64_t h = 0; h < 16; ++h) kept_norm += std::abs(dx[h]);
  EXPECT_GT(kept_norm, 0.0);
  for (std::int64_t e = 1; e < 4; ++e)
    for (float v : layer.expert_grad(e)) EXPECT_EQ(v, 0.0f) << "expert " << e << " saw no token";

  // A second forward/backward adds to the gradients; zero_grad clears them.
  const Tensor<float> once = layer.expert_grad(0);
  layer.forward(x, moe::Pass::Training);
  layer.backward(c);
  const Tensor<float> twice = layer.expert_grad(0);
  for (std::int64_t i = 0; i < once.numel(); ++i) EXPECT_NEAR(twice[i], 2 * once[i], 1e-5 + 1e-5 * std::abs(once[i]));
  layer.zero_grad();
  for (float v : layer.expert_grad(0)) EXPECT_EQ(v, 0.0f);
}

TEST(Backward, NeedsATrainingForwardAndTheRightShape) {
  MOEConfig config(4, 2, 8, 12);
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::MoELayer layer(config, *comm, 1);
  const Tensor<float> x = moe::testing::random_tensor({5, 8}, 1.0, 1);
  EXPECT_MOE_ERROR(layer.backward(x), "no forward(input, Pass::Training)");
  layer.forward(x);
  EXPECT_MOE_ERROR(layer.backward(x), "no forward(input, Pass::Training)");
  layer.forward(x, moe::Pass::Training);
  EXPECT_MOE_ERROR(layer.backward(Tensor<float>({4, 8})), "grad_output has shape [4, 8]", "[5, 8]");
  EXPECT_EQ(layer.backward(x).shape(), x.shape());
  EXPECT_MOE_ERROR(layer.backward(x), "no forward");  // activations are used once
  moe::LayerOptions bad;
  bad.aux_loss_coef = -1.0f;
  EXPECT_MOE_ERROR(moe::MoELayer(config, *comm, 1, bad), "aux_loss_coef = -1");
}

TEST(Backward, EmptyBatch) {
  MOEConfig config(4, 2, 8, 12);
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::MoELayer layer(config, *comm, 1);
  const Tensor<float> x({0, 8});
  layer.forward(x, moe::Pass::Training);
  EXPECT_EQ(layer.backward(x).numel(), 0);
  for (float v : layer.gate_grad()) EXPECT_EQ(v, 0.0f);
}

}  // namespace
