// What frameworks build on: parameter views that are the layer's storage, loss weights
// set per backward, per-phase times, and the reference API's benchmark.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "moe/layer.hpp"
#include "moe/moe.hpp"
#include "support/test_util.hpp"

using moe::MOEConfig;
using moe::Tensor;

namespace {

std::unique_ptr<moe::Communicator> local() { return moe::make_communicator(moe::CommBackend::Local); }

MOEConfig glu_with_shared_gate() {
  MOEConfig c(4, 2, 8, 6, 1.25f);
  c.expert_kind = moe::ExpertKind::GLU;
  c.activation = moe::Activation::SiLU;
  c.shared_expert_dim = 5;
  c.shared_gate = true;
  return c;
}

TEST(ParameterViews, AreTheLayersStorageAndGradientsInEveryArchitecture) {
  for (const MOEConfig& config : {MOEConfig(4, 2, 8, 6, 1.25f), glu_with_shared_gate()}) {
    auto comm = local();
    moe::MoELayer layer(config, *comm, 3);
    const std::vector<moe::ParameterView> views = layer.parameter_views();
    std::int64_t total = 0;
    std::set<std::string> names;
    for (const auto& v : views) {
      names.insert(v.name);
      std::int64_t n = 1;
      for (std::int64_t d : v.shape) n *= d;
      total += n;
      ASSERT_NE(v.data, nullptr);
      ASSERT_NE(v.grad, nullptr);
      EXPECT_EQ(v.replicated, v.name.rfind("experts.", 0) != 0) << v.name;
    }
    EXPECT_EQ(names.size(), views.size());
    EXPECT_EQ(total, config.hidden_dim * config.num_experts + config.num_experts * config.expert_param_count() +
                         config.shared_expert_param_count() + (config.shared_gate ? config.hidden_dim : 0));
    // The gate view is the gate: a write through it is what the layer returns.
    ASSERT_EQ(views[0].name, "gate.weight");
    EXPECT_EQ(views[0].shape, (std::vector<std::int64_t>{config.hidden_dim, config.num_experts}));
    views[0].data[5] = 42.0f;
    EXPECT_EQ(layer.gate_weights()[5], 42.0f);
    // Expert e's first input-projection row starts its flat parameters.
    const auto& w_in = views[1];
    EXPECT_EQ(w_in.name, config.expert_kind == moe::ExpertKind::GLU ? "experts.w_gate_up" : "experts.w1");
    const Tensor<float> flat = layer.expert_params(2);
    const std::int64_t per_expert = w_in.shape[1] * w_in.shape[2];
    for (std::int64_t i = 0; i < per_expert; ++i) ASSERT_EQ(w_in.data[2 * per_expert + i], flat[i]);
    // The gradient views are what backward accumulates into.
    const Tensor<float> x = moe::testing::random_tensor({9, config.hidden_dim}, 1.0, 4);
    layer.forward(x, moe::Pass::Training);
    Tensor<float> g(x.shape());
    for (float& v : g) v = 1.0f;
    layer.backward(g);
    const Tensor<float> gate_grad = layer.gate_grad();
    for (std::int64_t i = 0; i < gate_grad.numel(); ++i) ASSERT_EQ(views[0].grad[i], gate_grad[i]);
    const Tensor<float> expert_grad = layer.expert_grad(1);
    for (std::int64_t i = 0; i < per_expert; ++i) ASSERT_EQ(w_in.grad[per_expert + i], expert_grad[i]);
  }
}

// The gate's gradient is linear in the aux-loss weight: g(w) = g(0) + w·(g(1) − g(0)).
TEST(LossWeights, ScaleTheAuxLossGradientOfTheNextBackward) {
  const MOEConfig config(4, 2, 8, 6, 1.25f);
  const Tensor<float> x = moe::testing::random_tensor({13, 8}, 1.0, 5);
  Tensor<float> g(x.shape());
  for (float& v : g) v = 0.5f;
  auto gate_grad = [&](float aux_weight, float z_weight) {
    auto comm = local();
    moe::MoELayer layer(config, *comm, 3);
    layer.set_loss_weights(aux_weight, z_weight);
    layer.forward(x, moe::Pass::Training);
    layer.backward(g);
    return layer.gate_grad();
  };
  const Tensor<float> g0 = gate_grad(0, 0), g1 = gate_grad(1, 0), g3 = gate_grad(3, 0), z1 = gate_grad(0, 1);
  double moved = 0, z_moved = 0;
  for (std::int64_t i = 0; i < g0.numel(); ++i) {
    EXPECT_NEAR(g3[i], g0[i] + 3.0 * (g1[i] - g0[i]), 1e-5) << i;
    moved += std::abs(g1[i] - g0[i]);
    z_moved += std::abs(z1[i] - g0[i]);
  }
  EXPECT_GT(moved, 1e-3);
  EXPECT_GT(z_moved, 1e-3);

  auto comm = local();
  MOEConfig sigmoid = config;
  sigmoid.router = moe::RouterKind::Sigmoid;
  moe::MoELayer layer(sigmoid, *comm, 3);
  EXPECT_THROW(layer.set_loss_weights(1, 0.5f), moe::Error);
  EXPECT_THROW(layer.set_loss_weights(NAN, 0), moe::Error);
}

TEST(PhaseTimes, CoverTheForwardAndTheBackward) {
  auto comm = local();
  moe::MoELayer layer(glu_with_shared_gate(), *comm, 3);
  const Tensor<float> x = moe::testing::random_tensor({64, 8}, 1.0, 6);
  const moe::ForwardResult r = layer.forward(x, moe::Pass::Training);
  const moe::PhaseTimes& f = r.stats.times;
  EXPECT_GT(f.route, 0);
  EXPECT_GT(f.experts, 0);
  EXPECT_GT(f.shared_expert, 0);
  EXPECT_EQ(f.dispatch, 0);  // one rank: nothing crosses
  EXPECT_EQ(f.send_back, 0);
  EXPECT_DOUBLE_EQ(f.total(), f.route + f.plan + f.pack + f.dispatch + f.experts + f.send_back + f.combine +
                                  f.shared_expert + f.reduce + f.wait);
  EXPECT_EQ(f.wait, 0);  // no barriers unless LayerOptions::separate_waits
  layer.backward(x);
  const moe::PhaseTimes& b = layer.backward_times();
  EXPECT_GT(b.experts, 0);
  EXPECT_GT(b.route, 0);
  EXPECT_GT(b.shared_expert, 0);
}

TEST(Benchmark, TimesTheReferenceForwardAndPrintsItsTwoLines) {
  ::testing::internal::CaptureStdout();
  const moe::BenchmarkResult r = moe::benchmark_moe_performance(MOEConfig(4, 2, 16, 32), 7);
  const std::string printed = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(printed.find("Average time per forward pass: "), std::string::npos) << printed;
  EXPECT_NE(printed.find(" ms\nThroughput: "), std::string::npos) << printed;
  EXPECT_NE(printed.find(" tokens/sec\n"), std::string::npos) << printed;
  EXPECT_EQ(r.num_runs, 7);
  EXPECT_EQ(r.num_tokens, 64);
  EXPECT_GT(r.average_ms, 0);
  EXPECT_NEAR(r.tokens_per_second, 64.0 / r.average_ms * 1000.0, 1e-6 * r.tokens_per_second);
  EXPECT_THROW(moe::benchmark_moe_performance(MOEConfig(4, 2, 16, 32), 0), moe::Error);
  EXPECT_THROW(moe::benchmark_moe_performance(MOEConfig(4, 5, 16, 32), 1), moe::Error);
}

}  // namespace
