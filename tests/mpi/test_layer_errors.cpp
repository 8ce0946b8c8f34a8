// Errors in multi-rank use reach every rank as a clear moe::Error, and nobody hangs.
#include "moe/layer.hpp"
#include "mpi_test_env.hpp"
#include "support/test_util.hpp"

using moe::MOEConfig;
using moe::Tensor;
using moe::testing::world;

namespace {

class LayerErrors : public moe::testing::MpiTest {};

TEST_F(LayerErrors, ExpertsNotDivisibleByRanks) {
  const int P = world().size();
  const MOEConfig config(P + 1, 1, 16, 16);  // never a multiple of P when P > 1
  if (P == 1) {
    EXPECT_NO_THROW(moe::MoELayer(config, world(), 1));
  } else {
    EXPECT_MOE_ERROR(moe::MoELayer(config, world(), 1), "num_experts = ", "not divisible by the number of ranks");
  }
}

TEST_F(LayerErrors, ConfigsThatDifferBetweenRanks) {
  const int P = world().size(), rank = world().rank();
  MOEConfig config(moe::testing::experts_shared_by(P), 2, 16, 16);
  if (rank == P - 1 && P > 1) config.top_k = 3;
  if (P == 1) {
    EXPECT_NO_THROW(moe::MoELayer(config, world(), 1));
  } else {
    EXPECT_MOE_ERROR(moe::MoELayer(config, world(), 1), "differs between ranks", "top_k ranges from 2 to 3");
  }
  // A different seed is a different model: also refused.
  const std::uint64_t seed = (rank == 0 && P > 1) ? 5 : 6;
  config.top_k = 2;  // the same config on every rank again
  if (P > 1) EXPECT_MOE_ERROR(moe::MoELayer(config, world(), seed), "seed ranges from 5 to 6");
}

// Expert groups with replicas: every group must build the same layer, and the replicas
// must join ranks at the same position of their groups; a failure reaches every rank.
TEST_F(LayerErrors, ReplicasThatDifferFailEveryRank) {
  const int P = world().size(), rank = world().rank();
  if (P == 1) {  // one group, its own replica: nothing can differ
    EXPECT_NO_THROW(moe::MoELayer(MOEConfig(2, 1, 16, 16), world(), world(), 1));
    return;
  }
  int smallest_factor = 2;  // of P: groups of P / it make at least two groups at any P
  while (P % smallest_factor != 0) ++smallest_factor;
  const int group = P / smallest_factor;
  const moe::ExpertParallelGroups groups = moe::split_expert_parallel(world(), group);
  const MOEConfig config(2 * group, 1, 16, 16);
  // The second group's seed differs: a different model.
  EXPECT_MOE_ERROR(moe::MoELayer(config, *groups.experts, *groups.replicas, rank < group ? 5 : 6),
                   "seed ranges from 5 to 6");
  // The job as both the groups and the replicas: the replicas hold different experts.
  EXPECT_MOE_ERROR(moe::MoELayer(MOEConfig(2 * P, 1, 16, 16), world(), world(), 1),
                   "the replicas communicator joins ranks of expert groups of ", "at positions 0 to ");
  // A config the first group refuses (its experts do not divide over it) fails the others
  // too, whose own check passed.
  // The others name the rank that failed by its rank in the job: their replica in the
  // first group, rank mod group.
  const MOEConfig odd(rank < group ? 2 * group + 1 : 2 * group, 1, 16, 16);
  const std::string named = rank < group ? "MoELayer: " : "rank " + std::to_string(rank % group) + " failed: ";
  if (group > 1)
    EXPECT_MOE_ERROR(moe::MoELayer(odd, *groups.experts, *groups.replicas, 1), named.c_str(),
                     "not divisible by the number of ranks");
}

// A rank built with replicas among ranks built without them would sum what the others
// never send: every rank of the group refuses, and none waits for the others.
TEST_F(LayerErrors, ARankWithReplicasAmongRanksWithout) {
  const int P = world().size(), rank = world().rank();
  const std::unique_ptr<moe::Communicator> alone = world().split(rank, 0);
  const MOEConfig config(2 * P, 1, 16, 16);
  if (P == 1) {
    EXPECT_NO_THROW(moe::MoELayer(config, world(), *alone, 1));
  } else if (rank == 0) {
    EXPECT_MOE_ERROR(moe::MoELayer(config, world(), *alone, 1), "replicas (given or not) ranges from 0 to 1");
  } else {
    EXPECT_MOE_ERROR(moe::MoELayer(config, world(), 1), "replicas (given or not) ranges from 0 to 1");
  }
}

TEST_F(LayerErrors, StaticShapesNeedOneRank) {
  const int P = world().size();
  moe::LayerOptions options;
  options.static_shapes = true;
  const MOEConfig config(2 * P, 1, 8, 8);
  if (P == 1) {
    EXPECT_NO_THROW(moe::MoELayer(config, world(), 1, options));
  } else {
    EXPECT_MOE_ERROR(moe::MoELayer(config, world(), 1, options), "options.static_shapes = true on ",
                     "expected one rank");
  }
}

// forward_async (no wait, nothing for the host) on a dropless layer: one rank only, as
// the exchange needs its per-peer counts on the host; every rank says so.
TEST_F(LayerErrors, DroplessForwardAsyncNeedsOneRank) {
  const int P = world().size();
  MOEConfig config(2 * P, 1, 8, 8);
  config.drop_tokens = false;
  moe::MoELayer layer(config, world(), 1);
  std::vector<float> x(4 * 8, 0.5f), out(x.size());
  if (P == 1) {
    EXPECT_NO_THROW(layer.forward_async(x.data(), 4, out.data()));
  } else {
    EXPECT_MOE_ERROR(layer.forward_async(x.data(), 4, out.data()), "MoELayer::forward_async: called on ",
                     "expected one rank");
  }
}

TEST_F(LayerErrors, ExpertsPaddedToTheMostNeedOneRank) {
  const int P = world().size();
  const moe::testing::ScopedEnvironment padded("MOE_EXPERT_ROWS", "padded");
  const MOEConfig config(2 * P, 1, 8, 8);
  if (P == 1) {
    EXPECT_NO_THROW(moe::MoELayer(config, world(), 1));
  } else {
    EXPECT_MOE_ERROR(moe::MoELayer(config, world(), 1), "MOE_EXPERT_ROWS = padded on ", "expected one rank");
  }
}

TEST_F(LayerErrors, AnInvalidConfigOnOneRankFailsEveryRank) {
  const int P = world().size(), rank = world().rank();
  MOEConfig config(moe::testing::experts_shared_by(P), 2, 16, 16);
  if (rank == P - 1) config.top_k = config.num_experts + 1;
  if (rank == P - 1) {
    EXPECT_MOE_ERROR(moe::MoELayer(config, world(), 1), "Invalid config: top_k must be <= num_experts");
  } else {
    EXPECT_MOE_ERROR(moe::MoELayer(config, world(), 1), "failed: ", "Invalid config: top_k must be <= num_experts");
  }
}

TEST_F(LayerErrors, BadInputOnOneRankFailsEveryRankAndTheLayerStaysUsable) {
  const int rank = world().rank();
  const MOEConfig config(moe::testing::experts_shared_by(world().size()), 2, 16, 16);
  moe::MoELayer layer(config, world(), 3);
  const Tensor<float> bad = moe::testing::random_tensor({5, rank == 0 ? 17 : 16}, 1.0, 1);
  EXPECT_MOE_ERROR(layer.forward(bad), "Dimension mismatch: input hidden_dim != config.hidden_dim", "[5, 17]");
  const Tensor<float> good = moe::testing::random_tensor({5, 16}, 1.0, 2);
  EXPECT_EQ(layer.forward(good).output.shape(), good.shape());
}

TEST_F(LayerErrors, ExpertAccessorsNameTheOwner) {
  moe::MoELayer layer(MOEConfig(2 * world().size(), 1, 8, 8), world(), 1);
  const std::int64_t not_mine = (layer.first_local_expert() + 2) % (2 * world().size());
  if (world().size() > 1) EXPECT_MOE_ERROR(layer.expert_params(not_mine), "is not owned by rank");
  EXPECT_MOE_ERROR(layer.set_expert_params(layer.first_local_expert(), Tensor<float>({3})), "flat_params has 3 elements");
  EXPECT_MOE_ERROR(layer.set_gate_weights(Tensor<float>({8, 3})), "gate_weights has shape [8, 3]");
}

}  // namespace
