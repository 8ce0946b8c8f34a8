// The architectures of docs/design.md §1b — glu experts (SwiGLU, GeGLU), experts with
// and without biases, the sigmoid router with expert bias, group-limited top-k and
// routed scaling, and the shared expert with and without its gate — against the
// float64 reference (tests/support), forward and backward, plus the bias update,
// the optimizers and checkpoints of every new tensor.
// Tolerances: forward 1e-5 normwise relative; gradients 1e-4 against central finite
// differences of the float64 loss, per tensor.
#include <gtest/gtest.h>
#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "dispatch_plan.hpp"
#include "moe/checkpoint.hpp"
#include "moe/layer.hpp"
#include "moe/moe.hpp"
#include "moe/optimizer.hpp"
#include "support/random_architecture.hpp"
#include "support/reference_loss.hpp"
#include "support/test_util.hpp"

using moe::Activation;
using moe::ExpertKind;
using moe::MOEConfig;
using moe::RouterKind;
using moe::Tensor;
using moe::testing::random_tensor;
using moe::testing::relative_error;

namespace {

struct Arch {
  ExpertKind kind;
  bool bias;
  Activation act;
  RouterKind router;
  std::int64_t n_group, topk_group;
  float scale;
  std::int64_t shared_dim;
  bool shared_gate;
  bool drop, normalize;
  std::string name() const {
    std::string n = std::string(moe::expert_kind_name(kind)) + "_" + moe::activation_name(act) +
                    (bias ? "_bias" : "_nobias") + "_" + moe::router_name(router);
    if (n_group > 1) n += "_groups" + std::to_string(topk_group) + "of" + std::to_string(n_group);
    if (scale != 1.0f) n += "_scaled";
    if (shared_dim > 0) n += shared_gate ? "_gatedshared" : "_shared";
    return n + (drop ? "_drop" : "_dropless") + (normalize ? "" : "_raw");
  }
  MOEConfig config(std::int64_t E, std::int64_t k, std::int64_t H, std::int64_t F, float cf) const {
    MOEConfig c(E, k, H, F, cf);
    c.expert_kind = kind;
    c.expert_bias = bias;
    c.activation = act;
    c.router = router;
    c.n_group = n_group;
    c.topk_group = topk_group;
    c.routed_scaling_factor = scale;
    c.shared_expert_dim = shared_dim;
    c.shared_gate = shared_gate;
    c.drop_tokens = drop;
    c.normalize_top_k = normalize;
    return c;
  }
};

void PrintTo(const Arch& a, std::ostream* os) { *os << a.name(); }

// Every combination of expert kind × router × shared expert (none, plain, gated), the
// other options varied across them; the first four are the published models' layers.
std::vector<Arch> all_architectures() {
  std::vector<Arch> archs = {
      // Mixtral: glu (SwiGLU), no biases, softmax router.
      {ExpertKind::GLU, false, Activation::SiLU, RouterKind::Softmax, 1, 1, 1.0f, 0, false, true, true},
      // Qwen2-MoE: glu, softmax without renormalisation, gated shared expert.
      {ExpertKind::GLU, false, Activation::SiLU, RouterKind::Softmax, 1, 1, 1.0f, 6, true, true, false},
      // DeepSeek-V3: glu, sigmoid router with bias, groups, scaling, shared expert.
      {ExpertKind::GLU, false, Activation::SiLU, RouterKind::Sigmoid, 4, 2, 2.5f, 6, false, true, true},
      // The reference layer with a plain shared expert and group-limited softmax.
      {ExpertKind::FFN, true, Activation::ReLU, RouterKind::Softmax, 2, 1, 1.5f, 5, false, true, true},
  };
  const Activation acts[] = {Activation::GELU, Activation::GELUTanh, Activation::SiLU, Activation::ReLU};
  int variant = 0;
  for (ExpertKind kind : {ExpertKind::FFN, ExpertKind::GLU})
    for (RouterKind router : {RouterKind::Softmax, RouterKind::Sigmoid})
      for (int shared = 0; shared < 3; ++shared) {
        Arch a{kind, variant % 2 == 0, acts[variant % 4], router, 1, 1, 1.0f, shared ? 5 : 0, shared == 2,
               variant % 3 != 0, variant % 5 != 1};
        if (variant % 3 == 2) a.n_group = 2, a.topk_group = 1;
        if (variant % 4 == 1) a.scale = 1.75f;
        bool listed = false;
        for (const Arch& b : archs) listed = listed || b.name() == a.name();
        if (!listed) archs.push_back(a);
        ++variant;
      }
  return archs;
}
const std::vector<Arch> kArchs = all_architectures();

// A layer with random (not initial) parameters everywhere, so that biases, gates and
// the expert bias all matter.
moe::MoELayer random_layer(const MOEConfig& c, moe::Communicator& comm, std::uint64_t seed,
                           moe::LayerOptions options = {}) {
  moe::MoELayer layer(c, comm, seed, options);
  layer.set_gate_weights(random_tensor({c.hidden_dim, c.num_experts}, 1.0, seed + 1));
  for (std::int64_t e = 0; e < c.num_experts; ++e)
    layer.set_expert_params(e, random_tensor({c.expert_param_count()}, 0.4, seed + 10 + e));
  if (c.router == RouterKind::Sigmoid) layer.set_expert_bias(random_tensor({c.num_experts}, 0.1, seed + 2));
  if (c.shared_expert_dim > 0) layer.set_shared_expert_params(random_tensor({c.shared_expert_param_count()}, 0.4, seed + 3));
  if (c.shared_gate) layer.set_shared_gate_weights(random_tensor({c.hidden_dim}, 0.5, seed + 4));
  return layer;
}

moe::reference::Params reference_params(const moe::MoELayer& layer) {
  const MOEConfig& c = layer.config();
  auto doubles = [](const Tensor<float>& t) { return std::vector<double>(t.begin(), t.end()); };
  moe::reference::Params p;
  p.gate = doubles(layer.gate_weights());
  for (std::int64_t e = 0; e < c.num_experts; ++e) p.experts.push_back(doubles(layer.expert_params(e)));
  p.shared = doubles(layer.shared_expert_params());
  p.shared_gate = doubles(layer.shared_gate_weights());
  p.bias = doubles(layer.expert_bias());
  return p;
}

// Expects the forward `r` of `layer` on x to equal the float64 reference: choices,
// weights, aux and z-loss, the capacity's drops and loads, and the output (relative error
// 1e-5). Compares nothing and returns false where the reference's top-k has a near
// tie, which float32 may legitimately break the other way.
bool forward_matches_the_float64_reference(const moe::MoELayer& layer, const Tensor<float>& x,
                                           const moe::ForwardResult& r) {
  const MOEConfig& c = layer.config();
  const std::int64_t T = x.shape()[0];
  const moe::reference::Params p = reference_params(layer);
  const auto ref = moe::reference::route(x.data(), T, p.gate.data(), c, p.bias.empty() ? nullptr : p.bias.data());
  if (ref.min_selection_gap <= 1e-5) return false;
  EXPECT_EQ(std::vector<std::int32_t>(r.expert_indices.begin(), r.expert_indices.end()), ref.indices);
  EXPECT_LE(relative_error(r.expert_weights.data(), ref.weights.data(), T * c.top_k), 1e-5);
  EXPECT_NEAR(r.aux_loss, ref.aux_loss, 1e-5 * std::max(1.0, ref.aux_loss));
  EXPECT_NEAR(r.z_loss, ref.z_loss, 1e-5 * std::max(1.0, ref.z_loss));

  std::int64_t dropped = 0;
  const std::vector<bool> kept = moe::reference::capacity_mask(ref.indices, T, c, &dropped);
  std::vector<std::int64_t> load(static_cast<std::size_t>(c.num_experts), 0);
  for (std::size_t i = 0; i < kept.size(); ++i)
    if (kept[i]) ++load[static_cast<std::size_t>(ref.indices[i])];
  EXPECT_EQ(r.stats.dropped, dropped);
  EXPECT_EQ(r.stats.tokens_per_expert, load);

  std::vector<const double*> experts;
  for (const auto& e : p.experts) experts.push_back(e.data());
  std::vector<double> out = moe::reference::expert_computation(x.data(), T, ref.indices, ref.weights, experts, c);
  if (c.shared_expert_dim > 0)
    moe::reference::add_shared_expert(x.data(), T, p.shared.data(),
                                      p.shared_gate.empty() ? nullptr : p.shared_gate.data(), c, out);
  EXPECT_LE(relative_error(r.output.data(), out.data(), T * c.hidden_dim), 1e-5);
  return true;
}

class ArchForward : public ::testing::TestWithParam<Arch> {};

TEST_P(ArchForward, MatchesTheFloat64Reference) {
  const Arch a = GetParam();
  for (const std::int64_t T : {1, 37, 96}) {
    const MOEConfig c = a.config(8, a.n_group > 1 ? 3 : 2, 16, 12, 1.0f);
    auto comm = moe::make_communicator(moe::CommBackend::Local);
    moe::MoELayer layer = random_layer(c, *comm, 170 + T);
    const Tensor<float> x = random_tensor({T, c.hidden_dim}, 1.0, 200 + T);
    const moe::ForwardResult r = layer.forward(x);
    SCOPED_TRACE(::testing::Message() << "T = " << T);
    ASSERT_TRUE(forward_matches_the_float64_reference(layer, x, r)) << "a near tie: pick another seed";
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, ArchForward, ::testing::ValuesIn(kArchs),
                         [](const auto& info) { return info.param.name(); });

// Random layers (tests/support/random_architecture.hpp): every option drawn, shapes down
// to H = 1 and F = 1, against the float64 reference. A draw whose float32 and float64
// top-k may legitimately differ (a near tie) is replaced by the next, and few may be.
TEST(RandomArchitectures, ForwardMatchesTheFloat64Reference) {
  std::mt19937_64 rng(moe::testing::sweep_seed(1128));
  const int draws = 150 * moe::testing::sweep_scale();
  int compared = 0, near_ties = 0;
  while (compared < draws) {
    const MOEConfig c = moe::testing::random_architecture(rng, 1);
    const std::int64_t T = moe::testing::draw(rng, 1, 60);
    const double gate_scale = moe::testing::coin(rng) ? 0.3 : 3.0;
    const std::uint64_t seed = 5000 + 100 * std::uint64_t(compared + near_ties);
    SCOPED_TRACE(::testing::Message() << "draw " << compared + near_ties << ": " << c.to_string() << " T " << T
                                      << " gate scale " << gate_scale);
    auto comm = moe::make_communicator(moe::CommBackend::Local);
    moe::MoELayer layer = random_layer(c, *comm, seed);
    layer.set_gate_weights(random_tensor({c.hidden_dim, c.num_experts}, gate_scale, seed + 5));
    const Tensor<float> x = random_tensor({T, c.hidden_dim}, 1.0, seed + 6);
    const moe::ForwardResult r = layer.forward(x);
    if (forward_matches_the_float64_reference(layer, x, r)) ++compared;
    else ++near_ties;
  }
  EXPECT_LE(near_ties, draws / 15) << "too many near ties for the draws to mean much";
}

struct GradientCheck {
  // Run the layer at each of these OpenMP thread counts (empty: as it is). The
  // differences depend on the routing, not on the threads, so they are taken once, from
  // the first run's choices, and every later run must choose the same experts.
  std::vector<int> thread_counts;
  std::uint64_t seed = 31;     // the layer's parameters; the gate, tokens and output gradient from the next three
  bool meant_to_drop = true;   // a config with a capacity must drop some assignments
  // Each gradient's error is relative to max(max |difference quotient|, scale_floor).
  // Where a gradient is 0 in exact arithmetic (an aux loss made constant by balanced
  // loads) both sides are rounding, the differences' about 1e-11. A floor judges such a
  // gradient by its absolute size. (Through the weights of k = 1 renormalised the
  // layer's gradient is exactly 0 since kernels/router_row.hpp's backward avoids the
  // cancellation that left ε·|∂L/∂w|/s there, 5e-6 seen with ∂L/∂w near 10.)
  double scale_floor = 0;
};

// How near a ReLU expert's pre-activations may come to its kink at 0 for its gradients
// to be compared: the difference quotients move a pre-activation by about 1e-5 at most
// (a step of 1e-6 of a value of unit size, over up to 24 products), and float32's own
// rounding of one is far smaller.
constexpr double kLeastReluMargin = 1e-4;

// The layer's gradients against central differences of the float64 loss, on T tokens.
// With ReLU experts whose pre-activations come within kLeastReluMargin of the kink, the
// two are not comparable: the draw is counted in *near_kink when given, else a failure.
void expect_gradients_match_the_float64_loss(const MOEConfig& c, std::int64_t T, const GradientCheck& check = {},
                                             int* near_kink = nullptr) {
  const std::int64_t H = c.hidden_dim;
  moe::LayerOptions options;
  options.aux_loss_coef = 0.3f;
  options.z_loss_coef = c.router == RouterKind::Softmax ? 0.2f : 0.0f;
  // Tokens with a common component, so that most of them prefer the same experts and
  // capacity 1.0 drops some.
  Tensor<float> x = random_tensor({T, H}, 1.0, check.seed + 2);
  for (float& v : x) v += 1.0f;
  const Tensor<float> g = random_tensor({T, H}, 1.0, check.seed + 3);

  // The tensors whose gradients are checked, by name, with their float64 values (which
  // numeric_gradient perturbs in place) and, once taken, their central differences.
  struct Checked {
    std::string what;
    std::vector<double>* values;
    std::vector<double> numeric;
  };
  std::vector<Checked> checked;
  moe::reference::Params p;
  std::vector<double> xs(x.begin(), x.end()), gs(g.begin(), g.end());
  std::vector<std::int32_t> indices;
  std::vector<bool> kept;
  const moe::reference::LossTerms terms{options.aux_loss_coef, options.z_loss_coef};
  auto loss = [&] { return moe::reference::training_loss(p, xs, T, indices, kept, gs, c, terms); };

  // The thread count back as it was however this returns (an ASSERT returns early).
  struct RestoreThreads {
    int threads = omp_get_max_threads();
    ~RestoreThreads() { omp_set_num_threads(threads); }
  } restore;
  const std::vector<int> runs = check.thread_counts.empty() ? std::vector<int>{0} : check.thread_counts;
  for (const int threads : runs) {
    SCOPED_TRACE(threads ? "threads = " + std::to_string(threads) : std::string("threads as they are"));
    if (threads) omp_set_num_threads(threads);
    auto comm = moe::make_communicator(moe::CommBackend::Local);
    moe::MoELayer layer = random_layer(c, *comm, check.seed, options);
    // Until a layer kept a count its caller set, every run here had the node's cores.
    if (threads) ASSERT_EQ(omp_get_max_threads(), threads) << "building the layer changed the thread count";
    layer.set_gate_weights(random_tensor({H, c.num_experts}, 0.7, check.seed + 1));
    const moe::ForwardResult fwd = layer.forward(x, moe::Pass::Training);
    const Tensor<float> dx = layer.backward(g);
    const std::vector<std::int32_t> chosen(fwd.expert_indices.begin(), fwd.expert_indices.end());

    std::vector<Tensor<float>> analytic = {layer.gate_grad(), dx};
    for (std::int64_t e = 0; e < c.num_experts; ++e) analytic.push_back(layer.expert_grad(e));
    if (c.shared_expert_dim > 0) analytic.push_back(layer.shared_expert_grad());
    if (c.shared_gate) analytic.push_back(layer.shared_gate_grad());

    if (checked.empty()) {  // the first run: the reference's inputs, and the differences
      indices = chosen;
      const moe::DispatchPlan plan = moe::make_dispatch_plan(indices.data(), T, c);
      kept.assign(plan.kept.begin(), plan.kept.end());
      if (c.drop_tokens && check.meant_to_drop) EXPECT_GT(plan.dropped, 0) << "meant to exercise dropping";
      p = reference_params(layer);
      if (c.activation == moe::Activation::ReLU) {
        auto least = [&](const std::vector<double>& flat, std::int64_t F) {
          return moe::reference::least_pre_activation(xs.data(), T, flat.data(), c, F);
        };
        double margin = std::numeric_limits<double>::infinity();
        for (const auto& expert : p.experts) margin = std::min(margin, least(expert, c.expert_dim));
        if (c.shared_expert_dim > 0) margin = std::min(margin, least(p.shared, c.shared_expert_dim));
        if (margin < kLeastReluMargin) {
          if (near_kink) ++*near_kink;
          else ADD_FAILURE() << "a ReLU pre-activation " << margin << " from the kink: pick another seed";
          return;
        }
      }
      checked.push_back({"gate", &p.gate, {}});
      checked.push_back({"input", &xs, {}});
      for (std::int64_t e = 0; e < c.num_experts; ++e)
        checked.push_back({"expert " + std::to_string(e), &p.experts[static_cast<std::size_t>(e)], {}});
      if (c.shared_expert_dim > 0) checked.push_back({"shared expert", &p.shared, {}});
      if (c.shared_gate) checked.push_back({"shared gate", &p.shared_gate, {}});
      for (Checked& t : checked) t.numeric = moe::reference::numeric_gradient(*t.values, loss);
    } else {
      ASSERT_EQ(chosen, indices) << "the routing changed with the thread count";
    }
    ASSERT_EQ(analytic.size(), checked.size());
    for (std::size_t i = 0; i < checked.size(); ++i) {
      ASSERT_EQ(analytic[i].numel(), static_cast<std::int64_t>(checked[i].numeric.size())) << checked[i].what;
      EXPECT_LE(relative_error(analytic[i].data(), checked[i].numeric.data(), analytic[i].numel(), check.scale_floor),
                1e-4)
          << checked[i].what;
    }
  }
}

class ArchGradients : public ::testing::TestWithParam<Arch> {};

TEST_P(ArchGradients, MatchFiniteDifferencesOfTheFloat64Loss) {
  const Arch a = GetParam();
  expect_gradients_match_the_float64_loss(a.config(4, 2, 6, 5, 1.0f), 11);
}

// With many experts the backward runs whole experts concurrently, one per thread
// (src/expert_compute.cpp): the same gradients with 1, 2 and 3 threads.
// (The central differences, the costly part, are taken once per layer: under the
// sanitizers' unoptimised build this test took 137 s taking them at every count.)
TEST(ArchGradientsManyExperts, MatchFiniteDifferencesWhateverTheThreadCount) {
  for (const Arch& a : {kArchs[2], kArchs[3]})  // DeepSeek-like glu, and ffn with biases
    expect_gradients_match_the_float64_loss(a.config(20, 3, 6, 5, 1.0f), 23, {{1, 2, 3}});
}

// Random layers as in RandomArchitectures.ForwardMatchesTheFloat64Reference, with H
// and F cut to 6 and 5 to keep the differences cheap (40 layers up to 8 and 6 took 54 s
// in the sanitizers' unoptimised build), and a random capacity (so dropping is left to
// chance). Errors relative to at least 1 (GradientCheck): the gradients of these
// layers (unit inputs) run to 10, and a draw can make one vanish.
TEST(RandomArchitectures, GradientsMatchFiniteDifferencesOfTheFloat64Loss) {
  std::mt19937_64 rng(moe::testing::sweep_seed(2811));
  const int draws = 30 * moe::testing::sweep_scale();
  int near_kink = 0;
  for (int d = 0; d < draws; ++d) {
    MOEConfig c = moe::testing::random_architecture(rng, 1);
    c.hidden_dim = std::min<std::int64_t>(c.hidden_dim, 6);
    c.expert_dim = std::min<std::int64_t>(c.expert_dim, 5);
    c.shared_expert_dim = std::min<std::int64_t>(c.shared_expert_dim, 4);
    const std::int64_t T = moe::testing::draw(rng, 1, 12);
    SCOPED_TRACE(::testing::Message() << "draw " << d << ": " << c.to_string() << " T " << T);
    expect_gradients_match_the_float64_loss(c, T, {{}, 7000 + 10 * std::uint64_t(d), false, 1.0}, &near_kink);
  }
  EXPECT_LE(near_kink, draws / 10) << "too many draws near a ReLU kink for the sweep to mean much";
}

INSTANTIATE_TEST_SUITE_P(Kinds, ArchGradients, ::testing::ValuesIn(kArchs),
                         [](const auto& info) { return info.param.name(); });

TEST(ExpertBias, UpdateMovesEachBiasAgainstItsLoad) {
  MOEConfig c(8, 2, 16, 8);
  c.router = RouterKind::Sigmoid;
  c.bias_update_rate = 0.01f;
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::MoELayer layer = random_layer(c, *comm, 5);
  const Tensor<float> before = layer.expert_bias();
  std::vector<double> load(8, 0.0);
  for (int step = 0; step < 2; ++step) {  // loads add up over forwards until the update
    const moe::ForwardResult r = layer.forward(random_tensor({40, 16}, 1.0, 6 + step), moe::Pass::Training);
    for (std::int32_t e : r.expert_indices) load[e] += 1;
  }
  layer.forward(random_tensor({40, 16}, 1.0, 9));  // an inference forward does not count
  layer.update_expert_bias();
  const Tensor<float> after = layer.expert_bias();
  double mean = 0;
  for (double l : load) mean += l / 8;
  for (int e = 0; e < 8; ++e) {
    const double expected = load[e] < mean ? 0.01 : load[e] > mean ? -0.01 : 0.0;
    EXPECT_NEAR(after[e] - before[e], expected, 1e-7) << "expert " << e << " load " << load[e] << " mean " << mean;
  }
  layer.update_expert_bias();  // nothing counted since: no change
  const Tensor<float> again = layer.expert_bias();
  EXPECT_EQ(std::vector<float>(again.begin(), again.end()), std::vector<float>(after.begin(), after.end()));
}

TEST(ExpertBias, OnlyTheSigmoidRouterHasOne) {
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::MoELayer layer(MOEConfig(4, 2, 8, 8), *comm, 1);
  EXPECT_EQ(layer.expert_bias().numel(), 0);
  EXPECT_MOE_ERROR(layer.set_expert_bias(Tensor<float>({4})), "softmax", "only the sigmoid router");
  MOEConfig sigmoid(4, 2, 8, 8);
  sigmoid.router = RouterKind::Sigmoid;
  moe::LayerOptions z;
  z.z_loss_coef = 0.1f;
  EXPECT_MOE_ERROR(moe::MoELayer(sigmoid, *comm, 1, z), "z_loss_coef = 0.1", "sigmoid router");
}

TEST(Architectures, ConfigRulesNameTheField) {
  MOEConfig c(8, 4, 16, 8);
  c.n_group = 3;
  EXPECT_MOE_ERROR(c.validate(), "n_group = 3", "divisor of num_experts = 8");
  c.n_group = 4, c.topk_group = 5;
  EXPECT_MOE_ERROR(c.validate(), "topk_group = 5", "1..n_group");
  c.topk_group = 1;
  EXPECT_MOE_ERROR(c.validate(), "top_k = 4 exceeds the 2 experts");
  c.topk_group = 2, c.routed_scaling_factor = 0.0f;
  EXPECT_MOE_ERROR(c.validate(), "routed_scaling_factor = 0");
  c.routed_scaling_factor = 1.0f, c.shared_gate = true;
  EXPECT_MOE_ERROR(c.validate(), "shared_gate = true but shared_expert_dim = 0");
  c.shared_expert_dim = 4, c.bias_update_rate = -1.0f;
  EXPECT_MOE_ERROR(c.validate(), "bias_update_rate = -1");
}

TEST(Architectures, OptimizerStepsUpdateTheSharedExpertAndTheBias) {
  for (const bool adamw : {true, false}) {
    MOEConfig c = kArchs[2].config(8, 2, 16, 12, 1.25f);
    c.bias_update_rate = 0.01f;
    auto comm = moe::make_communicator(moe::CommBackend::Local);
    moe::MoELayer layer = random_layer(c, *comm, 7);
    moe::Optimizer opt = adamw ? moe::Optimizer::adamw(layer, {1e-2f}) : moe::Optimizer::sgd(layer, {1e-2f});
    const Tensor<float> shared = layer.shared_expert_params(), bias = layer.expert_bias();
    const Tensor<float> x = random_tensor({30, 16}, 1.0, 8);
    layer.forward(x, moe::Pass::Training);
    layer.zero_grad();
    layer.backward(random_tensor({30, 16}, 1.0, 9));
    opt.step();
    EXPECT_GT(relative_error(layer.shared_expert_params().data(), shared.data(), shared.numel()), 1e-4);
    EXPECT_GT(relative_error(layer.expert_bias().data(), bias.data(), bias.numel()), 1e-4);
  }
}

TEST(Architectures, CheckpointsHoldEveryTensorAndTheOptimizerState) {
  // Per process: two test runs at once on one machine (CI's stages, a developer's
  // build beside it) must not write each other's files.
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("moe-arch-ckpt-" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(dir);
  for (const Arch& a : kArchs) {
    const MOEConfig c = a.config(8, a.n_group > 1 ? 3 : 2, 16, 12, 1.25f);
    auto comm = moe::make_communicator(moe::CommBackend::Local);
    moe::MoELayer layer = random_layer(c, *comm, 11);
    moe::Optimizer opt = moe::Optimizer::adamw(layer, {1e-2f});
    const Tensor<float> x = random_tensor({20, 16}, 1.0, 12), g = random_tensor({20, 16}, 1.0, 13);
    auto train_step = [&](moe::MoELayer& l, moe::Optimizer& o) {
      l.forward(x, moe::Pass::Training);
      l.zero_grad();
      l.backward(g);
      o.step();
    };
    train_step(layer, opt);
    const std::string path = dir + "/" + a.name() + ".h5";
    moe::save_checkpoint(path, layer, 1, &opt);
    EXPECT_EQ(moe::read_checkpoint_config(path).to_string(), c.to_string());

    moe::MoELayer loaded(moe::read_checkpoint_config(path), *comm, 999);
    moe::Optimizer loaded_opt = moe::Optimizer::adamw(loaded, {1e-2f});
    EXPECT_EQ(moe::load_checkpoint(path, loaded, &loaded_opt), 1);
    // One more identical step on both: equal bits only if every tensor and every
    // optimizer state came back.
    train_step(layer, opt);
    train_step(loaded, loaded_opt);
    const Tensor<float> y1 = layer.forward(x).output, y2 = loaded.forward(x).output;
    EXPECT_EQ(std::vector<float>(y1.begin(), y1.end()), std::vector<float>(y2.begin(), y2.end())) << a.name();
    const Tensor<float> b1 = layer.expert_bias(), b2 = loaded.expert_bias();
    EXPECT_EQ(std::vector<float>(b1.begin(), b1.end()), std::vector<float>(b2.begin(), b2.end())) << a.name();

    const moe::CheckpointSummary s = moe::inspect_checkpoint(path);
    for (const auto& e : s.experts) EXPECT_EQ(e.checksum, moe::TensorChecksum::Verified) << a.name();
    for (const auto& t : s.tensors) EXPECT_EQ(t.checksum, moe::TensorChecksum::Verified) << t.name;
    const std::size_t expected_tensors = 1 + (c.router == RouterKind::Sigmoid) +
                                         (c.shared_expert_dim > 0 ? s.expert_tensors.size() : 0) + c.shared_gate;
    EXPECT_EQ(s.tensors.size(), expected_tensors) << a.name();

    const moe::ReferenceModel m = moe::load_reference_model(path);
    EXPECT_EQ(m.shared_expert_params.numel(), c.shared_expert_param_count());
    EXPECT_EQ(m.expert_bias.numel(), c.router == RouterKind::Sigmoid ? c.num_experts : 0);
  }
  std::filesystem::remove_all(dir);
}

TEST(Architectures, ReferenceApiRunsGluExperts) {
  MOEConfig c(6, 2, 20, 14);
  c.expert_kind = ExpertKind::GLU;
  c.expert_bias = false;
  c.activation = Activation::SiLU;
  c.drop_tokens = false;
  EXPECT_EQ(c.expert_param_count(), 20 * 28 + 14 * 20);
  const Tensor<float> x = random_tensor({25, 20}, 1.0, 41), wg = random_tensor({20, 6}, 0.5, 42);
  std::vector<Tensor<float>> experts;
  std::vector<const float*> pointers;
  for (int e = 0; e < 6; ++e) experts.push_back(random_tensor({c.expert_param_count()}, 0.3, 43 + e));
  for (const auto& e : experts) pointers.push_back(e.data());
  auto [weights, indices, loss] = moe::moe_gating_forward(x, wg, c);
  const Tensor<float> out = moe::moe_expert_computation(x, weights, indices, experts, c);
  const auto ref = moe::reference::expert_computation(x.data(), 25, std::vector<std::int32_t>(indices.begin(), indices.end()),
                                                      std::vector<float>(weights.begin(), weights.end()), pointers, c);
  EXPECT_LE(relative_error(out.data(), ref.data(), out.numel()), 1e-5);
  const Tensor<float> y = moe::apply_expert_ffn(x, experts[2], c);
  for (std::int64_t t = 0; t < 25; ++t) {
    const auto row = moe::reference::expert_row(x.data() + t * 20, experts[2].data(), c);
    EXPECT_LE(relative_error(y.data() + t * 20, row.data(), 20), 1e-5);
  }
  EXPECT_MOE_ERROR(moe::apply_expert_ffn(x, Tensor<float>({2 * 20 * 14 + 14 + 20}), c),
                   "expected 840 for glu experts without biases");
}

}  // namespace

namespace {

// Non-finite weights give non-finite outputs for the tokens that use them, with every
// activation (issue 10: ReLU written as z > 0 ? z : 0 turned NaN into 0 and hid a
// corrupted expert); other tokens stay finite.
TEST(NonFinite, NaNOrInfWeightsReachTheOutputOfTheirTokens) {
  for (ExpertKind kind : {ExpertKind::FFN, ExpertKind::GLU})
    for (Activation act : {Activation::ReLU, Activation::GELU, Activation::GELUTanh, Activation::SiLU})
      for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
        MOEConfig c(4, 1, 8, 6);
        c.expert_kind = kind;
        c.activation = act;
        c.drop_tokens = false;
        auto comm = moe::make_communicator(moe::CommBackend::Local);
        moe::MoELayer layer(c, *comm, 3);
        Tensor<float> flat = layer.expert_params(2);
        for (std::int64_t i = 0; i < c.hidden_dim * (kind == ExpertKind::GLU ? 2 : 1) * c.expert_dim; ++i)
          flat[i] = bad;  // W_in
        layer.set_expert_params(2, flat);
        const Tensor<float> x = random_tensor({40, 8}, 1.0, 5);
        const moe::ForwardResult r = layer.forward(x);
        int on_bad = 0;
        for (std::int64_t t = 0; t < 40; ++t) {
          bool finite = true;
          for (std::int64_t h = 0; h < 8; ++h) finite = finite && std::isfinite(r.output[t * 8 + h]);
          const bool uses_bad = r.expert_indices[t] == 2;
          on_bad += uses_bad;
          EXPECT_EQ(finite, !uses_bad) << moe::expert_kind_name(kind) << " " << moe::activation_name(act) << " "
                                       << bad << " token " << t;
        }
        EXPECT_GT(on_bad, 0) << "meant to route a token to the corrupted expert";
      }
}

}  // namespace
