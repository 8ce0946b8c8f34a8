// The distributed plan's steps (kernels/exchange_plan_steps.hpp, one function per GPU
// thread) run on the host as the kernels run them, against the host plan
// (src/dispatch_plan.cpp): the sender's half against make_send_layout, the owner's
// half against received_assignments and group_by_expert, for every rank of several
// shapes, in both traffic modes. Arrays equal bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <tuple>
#include <vector>

#include "dispatch_plan.hpp"
#include "kernels/exchange_plan_steps.hpp"
#include "kernels/ops.hpp"
#include "support/random_architecture.hpp"
#include "support/test_util.hpp"

namespace plan = moe::kernels::plan;

namespace {

bool same_record(const moe::AssignmentRecord& a, const moe::AssignmentRecord& b) {
  return a.local_expert == b.local_expert && a.starts_row == b.starts_row && a.weight == b.weight;
}

// What Ops::plan_send gives, in host vectors (the CPU ops' memory is the host's).
struct SendSteps {
  std::vector<std::int64_t> rows_per_rank, assignments_per_rank, kept_per_expert;
  std::vector<std::int32_t> row_token, assignment_slot, token_offsets, token_rows;
  std::vector<moe::AssignmentRecord> records;
};

SendSteps run_send_steps(moe::kernels::Ops& ops, const std::vector<std::int32_t>& indices,
                         const std::vector<float>& weights, std::int64_t T, std::int64_t k, std::int64_t E,
                         std::int64_t capacity, int P, int rank, bool deduplicate) {
  const auto n = static_cast<std::size_t>(T * k);
  const std::int32_t junk = 0x5a5a5a5a;  // a step that reads what nobody wrote shows up
  SendSteps s;
  s.rows_per_rank.assign(P, junk), s.assignments_per_rank.assign(P, junk), s.kept_per_expert.assign(E, junk);
  s.row_token.assign(n, junk), s.assignment_slot.assign(n, junk), s.token_offsets.assign(T + 1, junk);
  s.token_rows.assign(n, junk);
  s.records.assign(n, moe::AssignmentRecord{});
  ops.plan_send(indices.data(), weights.data(), T, k, E, capacity, P, rank, deduplicate,
                moe::kernels::SendPlan{s.row_token.data(), s.records.data(), s.assignment_slot.data(),
                                       s.token_offsets.data(), s.token_rows.data(), s.rows_per_rank.data(),
                                       s.assignments_per_rank.data(), s.kept_per_expert.data()});
  return s;
}

template <class T>
std::vector<T> first(const std::vector<T>& v, std::size_t n) {
  return std::vector<T>(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n));
}

// (tokens per rank, k, experts, ranks, capacity factor, drop)
using Shape = std::tuple<std::int64_t, std::int64_t, std::int64_t, int, float, bool>;

// Every rank's send steps and every owner's receive steps of one shape against the host
// plan, in both traffic modes. `hand_picked`: the shape is meant to drop (a factor
// under 1) and, deduplicated, to share rows; a random shape need not.
void expect_exchange_plan_steps_to_match_the_host_plan(const Shape& shape, bool hand_picked) {
  const auto [T0, k, E, P, cf, drop] = shape;
  SCOPED_TRACE(::testing::Message() << "T " << T0 << " k " << k << " E " << E << " P " << P << " cf " << cf
                                    << (drop ? " drop" : " dropless"));
  auto ops = moe::kernels::make_cpu_ops();
  moe::MOEConfig config;
  config.num_experts = E, config.top_k = k, config.hidden_dim = 8, config.expert_dim = 8;
  config.capacity_factor = cf, config.drop_tokens = drop;
  const std::int64_t local_experts = E / P;

  for (const moe::Traffic traffic : {moe::Traffic::Deduplicated, moe::Traffic::PerAssignment}) {
    const bool dedup = traffic == moe::Traffic::Deduplicated;
    SCOPED_TRACE(dedup ? "deduplicated" : "per assignment");
    std::vector<moe::SendLayout> layouts;
    for (int rank = 0; rank < P; ++rank) {
      SCOPED_TRACE("rank " + std::to_string(rank));
      const std::int64_t T = P > 2 && rank == P - 1 ? 0 : T0 + rank % 2 * 37;  // uneven, and one empty rank at P > 2
      const std::vector<std::int32_t> indices = moe::testing::skewed_choices(T, k, E, static_cast<std::uint32_t>(17 * rank + E));
      std::vector<float> weights(indices.size());
      for (std::size_t a = 0; a < weights.size(); ++a) weights[a] = 0.25f + 0.001f * static_cast<float>(a);

      const moe::DispatchPlan host = moe::make_dispatch_plan(indices.data(), T, config);
      layouts.push_back(moe::make_send_layout(host, indices.data(), weights.data(), P, rank, traffic));
      const moe::SendLayout& want = layouts.back();
      const SendSteps got = run_send_steps(*ops, indices, weights, T, k, E, std::min(host.capacity, T * k), P, rank, dedup);

      EXPECT_EQ(got.kept_per_expert, host.kept_per_expert);
      EXPECT_EQ(got.rows_per_rank, want.rows_per_rank);
      EXPECT_EQ(got.assignments_per_rank, want.assignments_per_rank);
      const auto R = static_cast<std::size_t>(want.rows()), A = want.assignments.size();
      EXPECT_EQ(first(got.row_token, R), want.row_token);
      EXPECT_EQ(first(got.assignment_slot, A), want.assignment_slot);
      EXPECT_EQ(got.token_offsets, want.token_offsets);
      EXPECT_EQ(first(got.token_rows, R), want.token_rows);
      for (std::size_t a = 0; a < A; ++a)
        ASSERT_TRUE(same_record(got.records[a], want.assignments[a])) << "record " << a;
      if (hand_picked && drop && cf < 1.0f && T > 0) EXPECT_GT(host.dropped, 0) << "the case should drop some";
      if (hand_picked && dedup && k > 1 && T >= 64) EXPECT_LT(R, A) << "the case should share some rows";
    }

    // Each owner receives its own records first, then every other rank's in rank order.
    for (int owner = 0; owner < P; ++owner) {
      SCOPED_TRACE("owner " + std::to_string(owner));
      std::vector<moe::AssignmentRecord> received;
      std::int64_t rows = 0;
      auto take_from = [&](int sender) {
        const moe::SendLayout& l = layouts[static_cast<std::size_t>(sender)];
        // The sender's blocks: the other ranks in rank order, its own last.
        std::int64_t begin = 0;
        for (int p = 0; p < P; ++p)
          if (p != sender && (owner == sender || p < owner)) begin += l.assignments_per_rank[p];
        received.insert(received.end(), l.assignments.begin() + begin,
                        l.assignments.begin() + begin + l.assignments_per_rank[owner]);
        rows += l.rows_per_rank[owner];
      };
      take_from(owner);
      for (int sender = 0; sender < P; ++sender)
        if (sender != owner) take_from(sender);

      const auto count = static_cast<std::int64_t>(received.size());
      const moe::ExpertAssignments work = moe::received_assignments(received.data(), count, rows, local_experts);
      const moe::ExpertGrouping grouping = moe::group_by_expert(work);
      std::vector<std::int32_t> grouped_rows(count, -7), offsets(rows + 1, -7), sources(count, -7);
      std::vector<float> weights(count, -7.0f);
      ops->plan_received(received.data(), count, rows, local_experts,
                         moe::kernels::ReceivedPlan{grouped_rows.data(), offsets.data(), sources.data(), weights.data()});
      EXPECT_EQ(grouped_rows, grouping.grouped_input_row);
      EXPECT_EQ(offsets, work.offsets);
      EXPECT_EQ(sources, grouping.grouped_row_of);
      EXPECT_EQ(weights, work.weight);
    }
  }
}

class ExchangePlanSteps : public ::testing::TestWithParam<Shape> {};

TEST_P(ExchangePlanSteps, MatchTheHostSendLayoutAndTheOwnersPlan) {
  expect_exchange_plan_steps_to_match_the_host_plan(GetParam(), true);
}

// Random shapes beyond the hand-picked ones: 1 to 8 ranks, up to 32 experts each, top-8,
// up to 1 500 tokens per rank, capacity factors from a quarter to 3
// (MOE_TEST_SWEEP_SEED and _SCALE soak further).
TEST(ExchangePlanSteps, MatchTheHostPlanOnRandomShapes) {
  std::mt19937_64 rng(moe::testing::sweep_seed(3011));
  for (int d = 0; d < 16 * moe::testing::sweep_scale(); ++d) {
    const int P = static_cast<int>(moe::testing::draw(rng, 1, 8));
    const std::int64_t E = P * moe::testing::draw(rng, 1, 32);
    const std::int64_t k = moe::testing::draw(rng, 1, std::min<std::int64_t>(E, 8));
    const std::int64_t T = moe::testing::draw(rng, 1, 1500);
    const float cf = std::uniform_real_distribution<float>(0.25f, 3.0f)(rng);
    expect_exchange_plan_steps_to_match_the_host_plan({T, k, E, P, cf, moe::testing::draw(rng, 0, 3) != 0}, false);
  }
}

// Chunk edges (T·k of 256 and past), one chunk, many; top-1; wide top-k; dropless, and
// a capacity factor large enough to keep everything (both skip admission: KeepAll).
INSTANTIATE_TEST_SUITE_P(Shapes, ExchangePlanSteps,
                         ::testing::Values(Shape{5, 2, 4, 2, 0.75f, true}, Shape{128, 2, 8, 2, 0.75f, true},
                                           Shape{129, 2, 8, 4, 1.25f, true}, Shape{300, 1, 8, 4, 0.6f, true},
                                           Shape{200, 6, 24, 3, 1.0f, true}, Shape{513, 4, 16, 4, 1.0f, false},
                                           Shape{700, 8, 64, 8, 0.8f, true}, Shape{300, 8, 64, 4, 1.0f, false},
                                           Shape{60, 2, 8, 2, 8.0f, true}));

}  // namespace
