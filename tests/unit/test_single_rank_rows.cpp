// How one rank lays out its experts' rows (src/single_rank_rows.hpp), against the
// definitions in docs/design.md §4b: the room of the padding to the most rows kept, the
// rows' bound, and the speculated rows. The layer's results in each layout are held to
// the packed layer's in test_plan_steps.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "dispatch_plan.hpp"
#include "single_rank_rows.hpp"

namespace {

using moe::SingleRankRows;

// x rounded up to a multiple of 8 (the padded rows' multiple).
std::int64_t up_to_8(double x) { return static_cast<std::int64_t>(std::ceil(x / 8.0)) * 8; }

// The room: 1.25 times the mean kept rows T·k/E, at most min(C, T), rounded up to 8.
// (1.25·T·k is exact in a double, and one correctly rounded division keeps an integer
// quotient exact, so the ceiling is the rational one.)
std::int64_t room_by_definition(const moe::MOEConfig& c, std::int64_t T) {
  const double room = std::ceil(1.25 * double(T) * double(c.top_k) / double(c.num_experts));
  const double most = double(std::min(moe::expert_capacity(c, T), T));
  return up_to_8(std::min(room, most));
}

// The guess: the last most kept scaled to T (rounded up), then 1/16 more (rounded up),
// at least the mean (rounded up), rounded up to 8, at most the room; none where the
// room is under the mean.
std::int64_t guess_by_definition(const moe::MOEConfig& c, std::int64_t T, std::int64_t last_most,
                                 std::int64_t last_T) {
  const double mean = std::ceil(double(T) * double(c.top_k) / double(c.num_experts));
  const std::int64_t room = room_by_definition(c, T);
  if (double(room) < mean) return 0;
  const double scaled = std::ceil(double(last_most) * double(T) / double(last_T));
  const double slack = std::ceil(scaled * 17.0 / 16.0);
  return std::min(up_to_8(std::max(slack, mean)), room);
}

moe::MOEConfig random_config(std::mt19937& rng) {
  std::uniform_int_distribution<int> experts(1, 64), factor(0, 4);
  const std::int64_t E = experts(rng);
  const std::int64_t k = std::uniform_int_distribution<std::int64_t>(1, std::min<std::int64_t>(E, 8))(rng);
  const int f = factor(rng);  // 0: dropless; else a capacity factor 0.5, 1.0, 1.25 or 2
  const float capacity_factor = f == 1 ? 0.5f : f == 2 ? 1.0f : f == 3 ? 1.25f : 2.0f;
  moe::MOEConfig c(E, k, 8, 8, capacity_factor);
  c.drop_tokens = f != 0;
  return c;
}

TEST(SingleRankRows, TheRoomAndTheBoundFollowTheirDefinitions) {
  std::mt19937 rng(2026);
  for (int trial = 0; trial < 2000; ++trial) {
    const moe::MOEConfig c = random_config(rng);
    const std::int64_t T = std::uniform_int_distribution<std::int64_t>(1, 20000)(rng);
    SCOPED_TRACE(::testing::Message() << c.to_string() << " T=" << T);
    const SingleRankRows most(c, false, true, false), packed(c, false, false, false), fixed(c, true, false, false);
    EXPECT_EQ(most.padded_rows_per_expert(T), room_by_definition(c, T));
    EXPECT_EQ(packed.padded_rows_per_expert(T), 0);
    if (c.drop_tokens) EXPECT_EQ(fixed.padded_rows_per_expert(T), std::min(moe::expert_capacity(c, T), T));
    // Padded to the most: E·R, or T·k when a routing too uneven for the room packs them.
    EXPECT_EQ(most.rows_bound(T), std::max(c.num_experts * room_by_definition(c, T), T * c.top_k));
    EXPECT_EQ(packed.rows_bound(T), 0);
    if (c.drop_tokens) EXPECT_EQ(fixed.rows_bound(T), 0);
  }
}

TEST(SingleRankRows, SpeculatedRowsFollowTheirDefinition) {
  std::mt19937 rng(7);
  std::int64_t guessed = 0, capped = 0, none = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const moe::MOEConfig c = random_config(rng);
    SingleRankRows rows(c, false, true, true);
    const std::int64_t T = std::uniform_int_distribution<std::int64_t>(1, 20000)(rng);
    const auto last_T = std::max<std::int64_t>(
        1, static_cast<std::int64_t>(double(T) * std::uniform_real_distribution<double>(0.5, 2.0)(rng)));
    std::vector<std::int64_t> kept(static_cast<std::size_t>(c.num_experts));
    // Loads up to 1.3 times the mean (at most last T each): guesses under the room and at it.
    const std::int64_t highest = std::min(last_T, 13 * (last_T * c.top_k + c.num_experts - 1) / (10 * c.num_experts));
    for (auto& n : kept) n = std::uniform_int_distribution<std::int64_t>(0, highest)(rng);
    SCOPED_TRACE(::testing::Message() << c.to_string() << " T=" << T << " last T=" << last_T);
    EXPECT_EQ(rows.speculated_rows(T), 0) << "no forward to guess from";
    rows.remember(kept, last_T);
    const std::int64_t want =
        guess_by_definition(c, T, *std::max_element(kept.begin(), kept.end()), last_T);
    const std::int64_t got = rows.speculated_rows(T);
    EXPECT_EQ(got, want);
    EXPECT_EQ(got % 8, 0);
    if (got > 0) {
      EXPECT_GE(got * c.num_experts, T * c.top_k) << "a miss packs T·k rows into E·R";
      EXPECT_LE(got, rows.padded_rows_per_expert(T));
      const moe::PlanLayout layout = rows.plan_layout(T, got);
      EXPECT_EQ(layout.rows_per_expert, got);
      EXPECT_EQ(layout.padding, moe::kernels::plan::Padding::RoomIfFits);
    }
    guessed += got > 0, capped += got > 0 && got == rows.padded_rows_per_expert(T), none += got == 0;
    EXPECT_EQ(rows.speculated_rows(0), 0);
    // Without speculation, or packed, or with static shapes, no guess.
    SingleRankRows off(c, false, true, false), unpadded(c, false, false, true), fixed(c, true, false, true);
    for (SingleRankRows* other : {&off, &unpadded, &fixed}) {
      other->remember(kept, last_T);
      EXPECT_EQ(other->speculated_rows(T), 0);
    }
  }
  // Every case was reached: guesses under the room, at the room, and none.
  EXPECT_GT(guessed - capped, 100);
  EXPECT_GT(capped, 100);
  EXPECT_GT(none, 100);
}

TEST(SingleRankRows, PlanLayoutsAndTheirRows) {
  const moe::MOEConfig c(4, 2, 8, 8, 1.0f);
  const std::int64_t T = 40;
  const std::vector<std::int64_t> kept = {20, 0, 17, 19};  // 56 of T·k = 80 kept at capacity 20
  const SingleRankRows packed(c, false, false, false), most(c, false, true, false), fixed(c, true, false, false);
  EXPECT_EQ(packed.plan_layout(T).rows_per_expert, 0);
  EXPECT_EQ(most.plan_layout(T).padding, moe::kernels::plan::Padding::Most);
  EXPECT_EQ(fixed.plan_layout(T).padding, moe::kernels::plan::Padding::Room);

  const moe::ExpertRows p = packed.rows_of_plan(T, &kept, packed.plan_layout(T));
  EXPECT_FALSE(p.padded);
  EXPECT_EQ(p.expert_offsets, (std::vector<std::int64_t>{0, 20, 20, 37, 56}));
  EXPECT_EQ(p.entries, 56);
  EXPECT_EQ(p.output_rows, T);

  // Static shapes: R = min(C, T) = 20 rows each, with or without the counts.
  const moe::ExpertRows s = fixed.rows_of_plan(T, &kept, fixed.plan_layout(T));
  EXPECT_TRUE(s.padded);
  EXPECT_EQ(s.expert_offsets, (std::vector<std::int64_t>{0, 20, 40, 60, 80}));
  EXPECT_EQ(s.entries, 56);
  const moe::ExpertRows queued = fixed.rows_of_plan(T, nullptr, fixed.plan_layout(T));
  EXPECT_EQ(queued.expert_offsets, s.expert_offsets);
  EXPECT_EQ(queued.entries, 0);
}

}  // namespace
