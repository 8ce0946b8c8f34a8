// The main correctness property (docs/design.md §2) over random layers: 60 (20 past
// two ranks) configurations drawn with every option of §1 and §1b (tests/support/
// random_architecture.hpp), each with random parameters, traffic mode, loss weights
// and token count per rank (0 included), held to the single-process layer on each
// rank's tokens, forward and backward (single_process_comparison.hpp says what is
// compared, and to what tolerance). The draws are seeded alike on every rank, and a
// failure names its draw and configuration.
#include <random>

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

constexpr int kDraws = 60;

class RandomInvariance : public moe::testing::MpiTest {};

// Random layers drawn from `seed`, each against the single-process layer; with
// `in_groups`, each over expert groups of a random size with replicas.
void expect_random_layers_equal_the_single_process_layer(int draws, std::uint64_t seed_of_draws, bool in_groups) {
  const int P = world().size(), rank = world().rank();
  std::mt19937_64 rng(moe::testing::sweep_seed(seed_of_draws));
  moe::testing::ExpertGroupsBySize groups;
  for (int d = 0; d < moe::testing::sweep_draws(draws, P); ++d) {
    const int group = in_groups ? moe::testing::random_expert_parallel_size(rng, P) : 0;
    const MOEConfig config = moe::testing::random_architecture(rng, in_groups ? group : P);
    const moe::LayerOptions options = moe::testing::random_layer_options(rng, config, moe::testing::layer_options());
    // A small gate spreads the tokens; a large one piles them on a few experts and
    // (with a capacity) drops some.
    const double gate_scale = coin(rng) ? 0.3 : 3.0;
    const std::uint64_t seed = 1000 * std::uint64_t(d);
    // Every rank draws every rank's token count, so the stream stays the same on all.
    std::vector<std::int64_t> tokens(static_cast<std::size_t>(P));
    for (auto& t : tokens) t = draw(rng, 0, 4) == 0 ? 0 : draw(rng, 1, 40);
    const std::int64_t T = tokens[static_cast<std::size_t>(rank)];
    const bool dedup = options.traffic == moe::TrafficMode::Deduplicated;
    SCOPED_TRACE(::testing::Message() << "draw " << d << ": " << config.to_string() << " traffic "
                                      << (dedup ? "dedup" : "per-assignment") << " aux " << options.aux_loss_coef
                                      << " z " << options.z_loss_coef << " gate scale " << gate_scale << " T " << T
                                      << " on rank " << rank << (in_groups ? " in groups of " : "")
                                      << (in_groups ? std::to_string(group) : ""));
    const Tensor<float> x = moe::testing::random_tensor({T, config.hidden_dim}, 1.0, seed + 10 + rank);
    const Tensor<float> g = moe::testing::random_tensor({T, config.hidden_dim}, 1.0, seed + 20 + rank);
    moe::testing::expect_equal_to_the_single_process_layer(
        config, options, x, g,
        [&](moe::MoELayer& layer) { moe::testing::set_random_parameters(layer, seed, gate_scale); },
        in_groups ? &groups.of(group) : nullptr);
  }
}

TEST_F(RandomInvariance, EveryDrawEqualsTheSingleProcessLayer) {
  expect_random_layers_equal_the_single_process_layer(kDraws, 20261128, false);
}

// Expert groups inside data parallelism (split_expert_parallel): each rank's forward is
// its group's, and every gradient the whole job's, which is what the single-process
// layer gives on this rank's tokens with its gradients summed over every rank.
TEST_F(RandomInvariance, ExpertGroupsWithReplicasEqualTheSingleProcessLayer) {
  expect_random_layers_equal_the_single_process_layer(kDraws / 2, 20261129, true);
}

}  // namespace
