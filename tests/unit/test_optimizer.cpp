// The optimizers against float64 loops of their update rules, clipping by the global
// norm, and optimizer state through a checkpoint.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "moe/checkpoint.hpp"
#include "moe/optimizer.hpp"
#include "support/test_util.hpp"

using moe::MOEConfig;
using moe::Tensor;

namespace {

struct Fixture {
  MOEConfig config{4, 2, 6, 8};
  std::unique_ptr<moe::Communicator> comm = moe::make_communicator(moe::CommBackend::Local);
  moe::MoELayer layer{config, *comm, 5};
  Tensor<float> x = moe::testing::random_tensor({9, 6}, 1.0, 6);
  Tensor<float> c = moe::testing::random_tensor({9, 6}, 1.0, 7);

  void gradients() {
    layer.zero_grad();
    layer.forward(x, moe::Pass::Training);
    layer.backward(c);
  }
  std::vector<double> flat_params() {
    std::vector<double> v;
    for (float f : layer.gate_weights()) v.push_back(f);
    for (std::int64_t e = 0; e < 4; ++e)
      for (float f : layer.expert_params(e)) v.push_back(f);
    return v;
  }
  std::vector<double> flat_grads() {
    std::vector<double> v;
    for (float f : layer.gate_grad()) v.push_back(f);
    for (std::int64_t e = 0; e < 4; ++e)
      for (float f : layer.expert_grad(e)) v.push_back(f);
    return v;
  }
};

TEST(Optimizer, AdamWFollowsItsUpdateRule) {
  Fixture f;
  const moe::AdamWOptions o{0.01f, 0.8f, 0.95f, 1e-6f, 0.1f};
  moe::Optimizer opt = moe::Optimizer::adamw(f.layer, o);
  std::vector<double> p = f.flat_params(), m(p.size(), 0), v(p.size(), 0);
  for (int t = 1; t <= 3; ++t) {
    f.gradients();
    const std::vector<double> g = f.flat_grads();
    opt.step();
    const double c1 = 1 - std::pow(0.8, t), c2 = 1 - std::pow(0.95, t);
    for (std::size_t i = 0; i < p.size(); ++i) {
      m[i] = 0.8 * m[i] + 0.2 * g[i];
      v[i] = 0.95 * v[i] + 0.05 * g[i] * g[i];
      p[i] -= 0.01 * (0.1 * p[i] + (m[i] / c1) / (std::sqrt(v[i] / c2) + 1e-6));
    }
    const std::vector<double> got = f.flat_params();
    EXPECT_LE(moe::testing::relative_error(got.data(), p.data(), std::int64_t(p.size())), 1e-6) << "step " << t;
    p = got;  // follow the float32 trajectory: the next step's gradients come from it
  }
  EXPECT_EQ(opt.step_count(), 3);
}

TEST(Optimizer, SgdWithMomentumFollowsItsUpdateRule) {
  Fixture f;
  moe::Optimizer opt = moe::Optimizer::sgd(f.layer, {0.05f, 0.9f, 0.01f});
  std::vector<double> p = f.flat_params(), buf(p.size(), 0);
  for (int t = 1; t <= 3; ++t) {
    f.gradients();
    const std::vector<double> g = f.flat_grads();
    opt.step();
    for (std::size_t i = 0; i < p.size(); ++i) {
      p[i] -= 0.05 * 0.01 * p[i];
      buf[i] = 0.9 * buf[i] + g[i];
      p[i] -= 0.05 * buf[i];
    }
    const std::vector<double> got = f.flat_params();
    EXPECT_LE(moe::testing::relative_error(got.data(), p.data(), std::int64_t(p.size())), 1e-6) << "step " << t;
    p = got;
  }
}

TEST(Optimizer, ClippingByTheGlobalNorm) {
  Fixture f;
  f.gradients();
  const std::vector<double> g = f.flat_grads();
  double norm = 0;
  for (double v : g) norm += v * v;
  norm = std::sqrt(norm);
  EXPECT_NEAR(moe::clip_grad_norm(f.layer, 0.0), norm, 1e-6 * norm) << "max_norm 0 only measures";
  EXPECT_NEAR(moe::clip_grad_norm(f.layer, 10 * norm), norm, 1e-6 * norm);
  EXPECT_NEAR(moe::clip_grad_norm(f.layer, norm / 4), norm, 1e-6 * norm);
  EXPECT_NEAR(moe::clip_grad_norm(f.layer, 0.0), norm / 4, 1e-5 * norm) << "clipped to max_norm";
  const std::vector<double> clipped = f.flat_grads();
  for (std::size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(clipped[i], g[i] / 4, 1e-5 * std::abs(g[i]) + 1e-9);
}

TEST(Optimizer, BadOptionsAreErrors) {
  Fixture f;
  EXPECT_MOE_ERROR(moe::Optimizer::adamw(f.layer, {0.0f}), "lr = 0", "> 0");
  EXPECT_MOE_ERROR(moe::Optimizer::adamw(f.layer, {1e-3f, 1.0f}), "beta1 = 1", "[0, 1)");
  EXPECT_MOE_ERROR(moe::Optimizer::sgd(f.layer, {0.1f, -0.5f}), "momentum = -0.5");
  EXPECT_MOE_ERROR(moe::Optimizer::sgd(f.layer, {0.1f, 0.9f, -1.0f}), "weight_decay = -1");
  EXPECT_MOE_ERROR(moe::clip_grad_norm(f.layer, std::nan("")), "clip_grad_norm", "max_norm = nan");
}

TEST(Optimizer, StateTravelsWithTheCheckpoint) {
  const std::string dir = std::filesystem::temp_directory_path() / ("moe-opt-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  Fixture a;
  moe::Optimizer opt = moe::Optimizer::adamw(a.layer, {0.02f});
  for (int t = 0; t < 2; ++t) a.gradients(), opt.step();
  moe::save_checkpoint(dir + "/a.h5", a.layer, 2, &opt, {{"data_position", 2}, {"data_seed", 99}});
  EXPECT_TRUE(moe::inspect_checkpoint(dir + "/a.h5").has_optimizer_state);

  // Restore into a fresh layer and optimizer, then take the same next step in both.
  Fixture b;
  moe::Optimizer restored = moe::Optimizer::adamw(b.layer, {0.5f});
  moe::TrainingAttributes training;
  EXPECT_EQ(moe::load_checkpoint(dir + "/a.h5", b.layer, &restored, &training), 2);
  EXPECT_EQ(restored.step_count(), 2);
  EXPECT_FLOAT_EQ(restored.learning_rate(), 0.02f) << "hyperparameters come from the file";
  EXPECT_EQ(training, (moe::TrainingAttributes{{"data_position", 2}, {"data_seed", 99}}));
  a.gradients(), opt.step();
  b.gradients(), restored.step();
  EXPECT_EQ(a.flat_params(), b.flat_params()) << "bitwise the same";

  moe::Optimizer sgd = moe::Optimizer::sgd(b.layer);
  EXPECT_MOE_ERROR(moe::load_checkpoint(dir + "/a.h5", b.layer, &sgd), "holds adamw optimizer state",
                   "given is sgd");
  moe::save_checkpoint(dir + "/plain.h5", b.layer, 0);
  EXPECT_MOE_ERROR(moe::load_checkpoint(dir + "/plain.h5", b.layer, &sgd), "holds no optimizer state");
  Fixture other;
  EXPECT_MOE_ERROR(moe::save_checkpoint(dir + "/x.h5", other.layer, 0, &sgd), "updates another layer");
  std::filesystem::remove_all(dir);
}

}  // namespace
