// What crosses the wire: in deduplicated mode exactly the minimum of docs/design.md §2 (a
// token crosses to an owner once), in per-assignment mode one row per kept
// assignment; and every rank receives exactly what the others sent it.
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

class Traffic : public moe::testing::MpiTest {
 protected:
  // E = 4 per rank and k = 4, so tokens often choose several experts of one rank.
  MOEConfig config{4 * world().size(), 4, 32, 16, 1.25f};
  std::uint64_t seed = 7;
  Tensor<float> x = moe::testing::random_tensor({64 + 8 * world().rank(), 32}, 1.0, 900 + world().rank());

  // rows[p] for each destination p from this rank's routing, computed independently.
  std::vector<std::int64_t> expected_rows(TrafficMode mode) {
    const int P = world().size();
    const std::int64_t T = x.dim(0), k = config.top_k, per_rank = config.num_experts / P;
    auto [w, idx, loss] = moe::moe_gating_forward(x, moe::initial_gate_weights(config, seed), config);
    const moe::DispatchPlan plan = moe::make_dispatch_plan(idx.data(), T, config);
    std::vector<std::int64_t> rows(P, 0);
    for (std::int64_t t = 0; t < T; ++t) {
      std::vector<bool> reached(P, false);
      for (std::int64_t j = 0; j < k; ++j) {
        if (!plan.is_kept(t, j)) continue;
        const int owner = idx[t * k + j] / per_rank;
        if (mode == TrafficMode::PerAssignment || !reached[owner]) ++rows[owner];
        reached[owner] = true;
      }
    }
    return rows;
  }
};

TEST_F(Traffic, EachModeSendsWhatItShouldAndNoMore) {
  const int P = world().size(), rank = world().rank();
  const std::int64_t row_bytes = config.hidden_dim * sizeof(float);
  moe::LayerOptions options = moe::testing::layer_options();
  options.traffic = TrafficMode::Deduplicated;
  moe::MoELayer dedup(config, world(), seed, options);
  options.traffic = TrafficMode::PerAssignment;
  moe::MoELayer per_assignment(config, world(), seed, options);
  const moe::ForwardResult a = dedup.forward(x);
  const moe::ForwardResult b = per_assignment.forward(x);

  // Who received what from whom, gathered as a P×P matrix on every rank.
  std::vector<std::int64_t> sent(P * P, 0), received(P * P, 0);
  for (int p = 0; p < P; ++p) {
    sent[rank * P + p] = a.stats.rows_sent[p];
    received[p * P + rank] = a.stats.rows_received[p];
  }
  world().all_reduce(sent.data(), P * P, moe::DataType::Int64, moe::ReduceOp::Sum);
  world().all_reduce(received.data(), P * P, moe::DataType::Int64, moe::ReduceOp::Sum);
  EXPECT_EQ(sent, received) << "rows_received must mirror rows_sent";

  EXPECT_LE(moe::testing::relative_error(a.output.data(), b.output.data(), a.output.numel()), 1e-6)
      << "the traffic mode must not change the result";
  if (P == 1) {
    // One rank owns every expert: nothing is sent at all.
    EXPECT_EQ(a.stats.rows_sent, std::vector<std::int64_t>{0});
    EXPECT_EQ(a.stats.bytes_sent, 0);
    return;
  }
  const auto minimum = expected_rows(TrafficMode::Deduplicated);
  const auto one_per_assignment = expected_rows(TrafficMode::PerAssignment);
  EXPECT_EQ(a.stats.rows_sent, minimum);
  EXPECT_EQ(b.stats.rows_sent, one_per_assignment);
  std::int64_t minimum_bytes = 0, assignment_bytes = 0;
  for (int p = 0; p < P; ++p)
    if (p != rank) minimum_bytes += minimum[p] * row_bytes, assignment_bytes += one_per_assignment[p] * row_bytes;
  EXPECT_EQ(a.stats.bytes_sent, minimum_bytes);
  EXPECT_EQ(b.stats.bytes_sent, assignment_bytes);
  EXPECT_LT(a.stats.bytes_sent, b.stats.bytes_sent) << "with k = 4 of 4 experts per rank, dedup must save bytes";
}

}  // namespace
