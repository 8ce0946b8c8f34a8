// Training invariance through the optimizer (docs/design.md §2 and §5): a P-rank layer
// trained for a few steps, each rank on its own tokens, ends with the parameters of a
// single-process layer that ran every rank's tokens of each step as micro-batches
// (forward and backward per rank, gradients accumulating) before the same clipping and
// optimizer step. That holds the global gradient norm, the optimizers' sharded and
// replicated state, and the sigmoid router's bias update to the single-process
// definition, over random layers (tests/support/random_architecture.hpp).
//
// Tolerance: each parameter tensor within 1e-4 normwise relative, the clipping norm
// within 1e-5, the expert bias bit for bit (its update counts whole tokens). A bug
// in what crosses ranks (a norm or a gradient not summed, an expert's state on the
// wrong rank) moves parameters by a whole step, 1e-2 of their size here. AdamW runs
// with eps = 1e-3, not 1e-8: a gradient that is 0 in exact arithmetic is rounding on
// both sides (single_process_comparison.hpp), and Adam's first step would turn that
// rounding into ±lr. Adam still divides each gradient by its own size, so a gradient
// near eps passes its own rounding (not the tensor's) to the step: 1.08e-5 was seen
// once in 3000 random layers, hence 1e-4 and not 1e-5. SGD's rate is small enough
// (1e-3) that no draw diverges: a diverging run amplifies rounding without bound.
#include <random>

#include "moe/optimizer.hpp"
#include "mpi_test_env.hpp"
#include "single_process_comparison.hpp"
#include "support/random_architecture.hpp"
#include "support/test_util.hpp"

using moe::MOEConfig;
using moe::Tensor;
using moe::testing::coin;
using moe::testing::draw;
using moe::testing::world;

namespace {

constexpr int kDraws = 18;  // 6 past two ranks (sweep_draws)
constexpr int kSteps = 3;

double error(const Tensor<float>& a, const Tensor<float>& b) {
  if (a.numel() != b.numel()) return INFINITY;
  return moe::testing::relative_error(a.data(), b.data(), a.numel());
}

moe::Optimizer make_optimizer(moe::MoELayer& layer, bool adamw) {
  if (!adamw) return moe::Optimizer::sgd(layer, {1e-3f, 0.9f, 0.01f});
  moe::AdamWOptions options;
  options.lr = 0.01f;
  options.eps = 1e-3f;
  return moe::Optimizer::adamw(layer, options);
}

class TrainingInvariance : public moe::testing::MpiTest {};

// Random layers drawn from `seed_of_draws`, each trained at P ranks and in one process;
// with `in_groups`, each over expert groups of a random size with replicas.
void expect_random_layers_to_train_as_the_single_process_layer(int draws, std::uint64_t seed_of_draws,
                                                               bool in_groups) {
  const int P = world().size(), rank = world().rank();
  std::mt19937_64 rng(moe::testing::sweep_seed(seed_of_draws));
  moe::testing::ExpertGroupsBySize groups;
  int clipped = 0;  // steps whose norm exceeded a clipping bound, so that clipping ran
  const int sweep = moe::testing::sweep_draws(draws, P);
  for (int d = 0; d < sweep; ++d) {
    const int group = in_groups ? moe::testing::random_expert_parallel_size(rng, P) : 0;
    MOEConfig config = moe::testing::random_architecture(rng, in_groups ? group : P);
    config.bias_update_rate = 0.01f;  // large enough to move the routing between steps
    const moe::LayerOptions options = moe::testing::random_layer_options(rng, config, moe::testing::layer_options());
    const bool adamw = coin(rng);
    // Clipping on (most of these norms exceed 0.5) or off; on in the last draw if no draw
    // has clipped yet, whatever the coins gave at this P.
    const bool clip = coin(rng) || (d == sweep - 1 && clipped == 0);
    const double max_norm = clip ? 0.5 : 0.0;
    const std::uint64_t seed = 1000 * std::uint64_t(d);
    SCOPED_TRACE(::testing::Message() << "draw " << d << ": " << config.to_string() << (adamw ? " adamw" : " sgd")
                                      << " clip " << max_norm << " aux " << options.aux_loss_coef << " z "
                                      << options.z_loss_coef << " on rank " << rank
                                      << (in_groups ? " in groups of " + std::to_string(group) : std::string()));

    moe::MoELayer layer = moe::testing::make_world_layer(config, options, in_groups ? &groups.of(group) : nullptr);
    moe::testing::set_random_parameters(layer, seed, 1.0);
    moe::Optimizer optimizer = make_optimizer(layer, adamw);
    auto local = moe::make_communicator(moe::CommBackend::Local);
    moe::LayerOptions single_options = options;
    single_options.device = moe::Device::CPU;
    moe::MoELayer single(config, *local, 5, single_options);
    moe::testing::set_random_parameters(single, seed, 1.0);
    moe::Optimizer single_optimizer = make_optimizer(single, adamw);

    for (int step = 0; step < kSteps; ++step) {
      // Every rank draws every rank's tokens: its own for the P-rank layer, all of them
      // for the single-process one.
      std::vector<Tensor<float>> xs, gs;
      for (int r = 0; r < P; ++r) {
        const std::int64_t T = draw(rng, 0, 4) == 0 ? 0 : draw(rng, 1, 30);
        const std::uint64_t s = seed + 10 * std::uint64_t(step * P + r);
        xs.push_back(moe::testing::random_tensor({T, config.hidden_dim}, 1.0, s + 5));
        gs.push_back(moe::testing::random_tensor({T, config.hidden_dim}, 1.0, s + 6));
      }
      layer.zero_grad();
      layer.forward(xs[static_cast<std::size_t>(rank)], moe::Pass::Training);
      layer.backward(gs[static_cast<std::size_t>(rank)]);
      const double norm = moe::clip_grad_norm(layer, max_norm);
      optimizer.step();

      single.zero_grad();
      for (int r = 0; r < P; ++r) {
        single.forward(xs[static_cast<std::size_t>(r)], moe::Pass::Training);
        single.backward(gs[static_cast<std::size_t>(r)]);
      }
      const double single_norm = moe::clip_grad_norm(single, max_norm);
      single_optimizer.step();
      EXPECT_NEAR(norm, single_norm, 1e-5 * single_norm) << "step " << step;
      if (max_norm > 0 && norm > max_norm) ++clipped;
    }

    EXPECT_LE(error(layer.gate_weights(), single.gate_weights()), 1e-4) << "gate";
    const Tensor<float> bias = layer.expert_bias(), single_bias = single.expert_bias();
    EXPECT_EQ(std::vector<float>(bias.begin(), bias.end()), std::vector<float>(single_bias.begin(), single_bias.end()));
    EXPECT_LE(error(layer.shared_expert_params(), single.shared_expert_params()), 1e-4) << "shared expert";
    EXPECT_LE(error(layer.shared_gate_weights(), single.shared_gate_weights()), 1e-4) << "shared gate";
    for (std::int64_t e = layer.first_local_expert(); e < layer.first_local_expert() + layer.num_local_experts(); ++e)
      EXPECT_LE(error(layer.expert_params(e), single.expert_params(e)), 1e-4) << "expert " << e;
  }
  EXPECT_GT(clipped, 0) << "meant to exercise clipping";
}

TEST_F(TrainingInvariance, RandomLayersTrainAsTheSingleProcessLayerOnEveryRanksTokens) {
  expect_random_layers_to_train_as_the_single_process_layer(kDraws, 1128, false);
}

// Expert groups inside data parallelism (split_expert_parallel): the replicas sum
// every gradient and the bias's loads, so the whole job still trains as one process.
TEST_F(TrainingInvariance, ExpertGroupsWithReplicasTrainAsTheSingleProcessLayer) {
  expect_random_layers_to_train_as_the_single_process_layer(kDraws, 1129, true);
}

}  // namespace
