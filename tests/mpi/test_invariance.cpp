// The main correctness property (docs/design.md §2): on every rank, the P-rank layer's output
// and aux loss equal the single-process reference API on that rank's tokens with all
// E experts, with dropping on and off, in both traffic modes, over shapes that stress
// dispatch and combine. Relative error ≤ 1e-5.
#include <algorithm>
#include <cmath>

#include "dispatch_plan.hpp"
#include "moe/layer.hpp"
#include "moe/moe.hpp"
#include "mpi_test_env.hpp"
#include "support/test_util.hpp"

using moe::MOEConfig;
using moe::Tensor;
using moe::TrafficMode;
using moe::testing::world;

namespace {

struct Scenario {
  const char* name;
  MOEConfig (*config)(int ranks);
  std::int64_t (*tokens)(int rank, int ranks);
  bool all_on_one_expert;  // force every token's first choice onto the last expert
};

MOEConfig base(std::int64_t E, std::int64_t k, bool drop, float cf = 1.0f) {
  MOEConfig c(E, k, 32, 48, cf);
  c.drop_tokens = drop;
  return c;
}
// 8 experts where the ranks share them evenly, else the next count they do.
std::int64_t eight_or_more(int ranks) { return moe::testing::experts_shared_by(ranks, 8); }
std::int64_t uneven(int rank, int) { return moe::testing::uneven_tokens(rank, 20, 13); }
std::int64_t last_rank_empty(int rank, int ranks) { return moe::testing::none_on_last_rank(rank, ranks, 37); }
std::int64_t fifty(int, int) { return 50; }

MOEConfig gelu_raw_weights(int P) {
  MOEConfig c = base(eight_or_more(P), 2, true);
  c.activation = moe::Activation::GELU;
  c.normalize_top_k = false;
  return c;
}

const Scenario kScenarios[] = {
    {"drop_uneven", [](int P) { return base(eight_or_more(P), 2, true); }, uneven, false},
    {"dropless_uneven", [](int P) { return base(eight_or_more(P), 2, false); }, uneven, false},
    {"last_rank_has_no_tokens", [](int P) { return base(eight_or_more(P), 2, true); }, last_rank_empty, false},
    {"all_on_one_expert_drop", [](int P) { return base(eight_or_more(P), 2, true); }, fifty, true},
    {"all_on_one_expert_dropless", [](int P) { return base(eight_or_more(P), 2, false); }, fifty, true},
    {"experts_equal_ranks", [](int P) { return base(std::max(2, P), 1, true, 1.25f); }, uneven, false},
    {"eight_experts_per_rank", [](int P) { return base(8 * P, 2, true, 1.25f); }, uneven, false},
    {"top1", [](int P) { return base(4 * P, 1, true); }, uneven, false},
    {"top_half_of_experts", [](int P) { return base(eight_or_more(P), 4, true, 1.25f); }, uneven, false},
    {"gelu_raw_weights", gelu_raw_weights, uneven, false},
};

void PrintTo(const Scenario& s, std::ostream* os) { *os << s.name; }

class Invariance : public moe::testing::MpiTest,
                   public ::testing::WithParamInterface<std::tuple<Scenario, TrafficMode>> {};

TEST_P(Invariance, MatchesSingleProcessOnThisRanksTokens) {
  const auto& [scenario, traffic] = GetParam();
  const int P = world().size(), rank = world().rank();
  const MOEConfig config = scenario.config(P);
  const std::uint64_t seed = 2024;
  const std::int64_t T = scenario.tokens(rank, P);
  const Tensor<float> x = moe::testing::random_tensor({T, config.hidden_dim}, 1.0, 500 + rank);

  moe::LayerOptions options = moe::testing::layer_options();
  options.traffic = traffic;
  moe::MoELayer layer(config, world(), seed, options);
  if (scenario.all_on_one_expert) {
    Tensor<float> gate({config.hidden_dim, config.num_experts});
    for (std::int64_t h = 0; h < config.hidden_dim; ++h) gate[h * config.num_experts + config.num_experts - 1] = 50.0f;
    layer.set_gate_weights(gate);
  }
  const moe::ForwardResult result = layer.forward(x);

  // The single-process reference API with every expert, from the same seed.
  std::vector<Tensor<float>> experts;
  for (std::int64_t e = 0; e < config.num_experts; ++e) experts.push_back(moe::initial_expert_params(config, seed, e));
  const Tensor<float> gate = layer.gate_weights();
  auto [weights, indices, loss] = moe::moe_gating_forward(x, gate, config);
  const Tensor<float> expected = moe::moe_expert_computation(x, weights, indices, experts, config);

  // Every rank sums the reference's kept loads and drops, to compare the layer's stats.
  const moe::DispatchPlan plan = moe::make_dispatch_plan(indices.data(), T, config);
  std::vector<std::int64_t> global_load = plan.kept_per_expert;
  world().all_reduce(global_load.data(), config.num_experts, moe::DataType::Int64, moe::ReduceOp::Sum);
  std::int64_t global_dropped = plan.dropped;
  world().all_reduce(&global_dropped, 1, moe::DataType::Int64, moe::ReduceOp::Sum);

  ASSERT_EQ(result.output.shape(), x.shape());
  EXPECT_LE(moe::testing::relative_error(result.output.data(), expected.data(), expected.numel()), 1e-5)
      << scenario.name << " on rank " << rank << " of " << P;
  EXPECT_NEAR(result.aux_loss, loss[0], 1e-5 * std::max(1.0f, std::abs(loss[0])));
  EXPECT_EQ(result.stats.dropped, plan.dropped);
  EXPECT_EQ(result.stats.tokens_per_expert, global_load);
  if (scenario.all_on_one_expert && config.drop_tokens) EXPECT_GT(global_dropped, 0) << "meant to drop";
  if (!config.drop_tokens) EXPECT_EQ(global_dropped, 0);
}

std::string scenario_name(const ::testing::TestParamInfo<std::tuple<Scenario, TrafficMode>>& info) {
  return std::string(std::get<0>(info.param).name) +
         (std::get<1>(info.param) == TrafficMode::Deduplicated ? "_dedup" : "_per_assignment");
}

INSTANTIATE_TEST_SUITE_P(Scenarios, Invariance,
                         ::testing::Combine(::testing::ValuesIn(kScenarios),
                                            ::testing::Values(TrafficMode::Deduplicated, TrafficMode::PerAssignment)),
                         scenario_name);


}  // namespace

namespace {

class Parameters : public moe::testing::MpiTest {};

// The sharded model is the single-process model: each rank's experts and gate are the
// ones initial_* gives for their global ids, whatever P.
TEST_F(Parameters, DependOnSeedAndGlobalIdOnly) {
  const MOEConfig config(4 * world().size(), 2, 16, 24);
  moe::MoELayer layer(config, world(), 99, moe::testing::layer_options());
  EXPECT_EQ(layer.num_local_experts(), 4);
  EXPECT_EQ(layer.first_local_expert(), 4 * world().rank());
  for (std::int64_t e = layer.first_local_expert(); e < layer.first_local_expert() + 4; ++e) {
    const Tensor<float> mine = layer.expert_params(e);
    const Tensor<float> expected = moe::initial_expert_params(config, 99, e);
    EXPECT_TRUE(std::equal(mine.begin(), mine.end(), expected.begin())) << "expert " << e;
  }
  const Tensor<float> gate = layer.gate_weights();
  const Tensor<float> expected_gate = moe::initial_gate_weights(config, 99);
  EXPECT_TRUE(std::equal(gate.begin(), gate.end(), expected_gate.begin()));
  EXPECT_FALSE(layer.owns_expert(layer.first_local_expert() + 4));
}

}  // namespace
