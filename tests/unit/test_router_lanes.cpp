// The router kernel's warp form (kernels/router_lanes.hpp) on the CPU: 32 host threads
// play a warp's lanes, and each reduction is the butterfly the kernel's shuffles do
// (lane i combines its value with lane i ^ o's, for o = 16, 8, 4, 2, 1). Its choices
// must be route_row's exactly; its scores within float rounding of route_row's and of
// a float64 softmax or sigmoid written from the definition.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/router_lanes.hpp"
#include "kernels/router_row.hpp"
#include "support/test_util.hpp"

namespace {

using moe::kernels::Choice;
using moe::kernels::kRouterLanes;
using moe::kernels::RouterParams;

// What the lanes of one emulated warp share: a slot each for a reduction's inputs,
// and a barrier.
class LaneExchange {
 public:
  template <class T>
  T butterfly(int lane, T mine, T (*combine)(const T&, const T&), T* slots) {
    slots[lane] = mine;
    wait_for_all();
    T values[kRouterLanes];
    std::copy(slots, slots + kRouterLanes, values);
    for (int offset = kRouterLanes / 2; offset > 0; offset /= 2) {
      T next[kRouterLanes];
      for (int i = 0; i < kRouterLanes; ++i) next[i] = combine(values[i], values[i ^ offset]);
      std::copy(next, next + kRouterLanes, values);
    }
    wait_for_all();  // every lane has read the slots before any lane writes them again
    return values[lane];
  }
  float sums[kRouterLanes];
  Choice choices[kRouterLanes];

 private:
  void wait_for_all() {
    std::unique_lock<std::mutex> lock(mutex_);
    const long generation = generation_;
    if (++arrived_ == kRouterLanes) {
      arrived_ = 0;
      ++generation_;
      all_arrived_.notify_all();
    } else {
      all_arrived_.wait(lock, [&] { return generation_ != generation; });
    }
  }
  std::mutex mutex_;
  std::condition_variable all_arrived_;
  int arrived_ = 0;
  long generation_ = 0;
};

float add(const float& a, const float& b) { return a + b; }

// The Warp route_row_across_lanes takes, for one host thread as one lane.
struct HostLane {
  LaneExchange& exchange;
  int lane_number;
  int lane() const { return lane_number; }
  float sum(float x) { return exchange.butterfly(lane_number, x, &add, exchange.sums); }
  Choice best(Choice c) { return exchange.butterfly(lane_number, c, &moe::kernels::better_choice, exchange.choices); }
};

struct Routed {
  std::vector<float> probs, weights, lse;
  std::vector<std::int32_t> indices;
};

template <int kPerLane>
void route_rows_in_lanes(const std::vector<float>& logits, int rows, const RouterParams& p, const float* bias,
                         Routed& out) {
  const int E = p.num_experts, k = p.top_k;
  LaneExchange exchange;
  std::vector<std::thread> lanes;
  std::vector<float> lse_of_lane(static_cast<std::size_t>(rows) * kRouterLanes);
  for (int lane = 0; lane < kRouterLanes; ++lane)
    lanes.emplace_back([&, lane] {
      HostLane warp{exchange, lane};
      for (int t = 0; t < rows; ++t)
        lse_of_lane[static_cast<std::size_t>(t * kRouterLanes + lane)] = moe::kernels::route_row_across_lanes<kPerLane>(
            warp, &logits[static_cast<std::size_t>(t * E)], p, bias, &out.probs[static_cast<std::size_t>(t * E)],
            &out.indices[static_cast<std::size_t>(t * k)], &out.weights[static_cast<std::size_t>(t * k)]);
    });
  for (std::thread& t : lanes) t.join();
  for (int t = 0; t < rows; ++t) {
    out.lse[static_cast<std::size_t>(t)] = lse_of_lane[static_cast<std::size_t>(t * kRouterLanes)];
    for (int lane = 1; lane < kRouterLanes; ++lane)  // every lane returns the same bits
      EXPECT_EQ(std::memcmp(&lse_of_lane[static_cast<std::size_t>(t * kRouterLanes + lane)],
                            &out.lse[static_cast<std::size_t>(t)], sizeof(float)),
                0)
          << "row " << t << " lane " << lane;
  }
}

void route_in_lanes(int per_lane, const std::vector<float>& logits, int rows, const RouterParams& p,
                    const float* bias, Routed& out) {
  switch (per_lane) {
    case 1: return route_rows_in_lanes<1>(logits, rows, p, bias, out);
    case 2: return route_rows_in_lanes<2>(logits, rows, p, bias, out);
    case 4: return route_rows_in_lanes<4>(logits, rows, p, bias, out);
    case 8: return route_rows_in_lanes<8>(logits, rows, p, bias, out);
    default: FAIL() << "no lane width " << per_lane;
  }
}

Routed sized(int rows, const RouterParams& p) {
  Routed r;
  r.probs.assign(static_cast<std::size_t>(rows * p.num_experts), -7.0f);
  r.weights.assign(static_cast<std::size_t>(rows * p.top_k), -7.0f);
  r.indices.assign(static_cast<std::size_t>(rows * p.top_k), -7);
  r.lse.assign(static_cast<std::size_t>(rows), -7.0f);
  return r;
}

bool near(float got, double expected, double tolerance) {
  if (std::isnan(expected)) return std::isnan(got);
  return std::fabs(got - expected) <= tolerance * (1.0 + std::fabs(expected));
}

TEST(RouterLanes, ChoicesAreRouteRowsAndScoresItsWithinRounding) {
  const float nan = std::nanf("");
  struct Case {
    int E, k;
    bool sigmoid;
    int n_group, topk_group;
  };
  const std::vector<Case> cases = {
      {8, 2, false, 1, 1},    {12, 3, false, 1, 1},  {32, 8, false, 1, 1},  {64, 8, false, 1, 1},
      {64, 8, true, 8, 4},    {64, 32, false, 1, 1}, {100, 6, true, 4, 2},  {256, 8, true, 8, 4},
      {256, 8, false, 64, 3}, {200, 1, false, 1, 1}, {33, 5, true, 1, 1},   {64, 8, false, 8, 4}};
  std::uint64_t seed = 5;
  for (const Case& c : cases)
    for (const bool ties : {false, true}) {
      RouterParams p;
      p.num_experts = c.E, p.top_k = c.k, p.sigmoid = c.sigmoid, p.n_group = c.n_group, p.topk_group = c.topk_group;
      p.normalize = c.E % 3 != 0;
      p.scale = c.sigmoid ? 2.5f : 1.0f;
      const int per_lane = moe::kernels::router_experts_per_lane(p);
      SCOPED_TRACE(::testing::Message() << "E=" << c.E << " k=" << c.k << (c.sigmoid ? " sigmoid" : " softmax")
                                        << " groups " << c.topk_group << "/" << c.n_group
                                        << (ties ? " tied" : "") << " lane width " << per_lane);
      ASSERT_GT(per_lane, 0);
      const int rows = 12;
      std::vector<float> logits(static_cast<std::size_t>(rows * c.E)), bias(static_cast<std::size_t>(c.E));
      moe::testing::fill_normal(logits.data(), logits.size(), 2.0, ++seed);
      moe::testing::fill_normal(bias.data(), bias.size(), 0.3, ++seed);
      if (ties)  // a coarse grid: many equal logits, so equal scores
        for (float& v : logits) v = std::round(v * 2.0f) / 2.0f;
      logits[static_cast<std::size_t>(3 * c.E + 1)] = nan;  // a NaN logit: row 3's scores are NaN (softmax)
      for (int e = 0; e < c.E; ++e) logits[static_cast<std::size_t>(5 * c.E + e)] = nan;  // row 5 all NaN
      const float* b = c.sigmoid ? bias.data() : nullptr;

      Routed expected = sized(rows, p), got = sized(rows, p);
      for (int t = 0; t < rows; ++t)
        expected.lse[t] = moe::kernels::route_row(&logits[t * c.E], p, b, &expected.probs[t * c.E],
                                                  &expected.indices[t * c.k], &expected.weights[t * c.k]);
      route_in_lanes(per_lane, logits, rows, p, b, got);
      EXPECT_EQ(got.indices, expected.indices);
      for (int t = 0; t < rows; ++t) {
        EXPECT_TRUE(near(got.lse[t], expected.lse[t], 1e-6)) << "row " << t << ": " << got.lse[t];
        for (int j = 0; j < c.k; ++j)
          EXPECT_TRUE(near(got.weights[t * c.k + j], expected.weights[t * c.k + j], 1e-6))
              << "row " << t << " slot " << j;
        // The scores from the definition, in float64.
        double max_logit = -INFINITY, sum = 0.0, total = 0.0;
        for (int e = 0; e < c.E; ++e) max_logit = std::max(max_logit, double(logits[t * c.E + e]));
        for (int e = 0; e < c.E; ++e) sum += std::exp(double(logits[t * c.E + e]) - max_logit);
        for (int e = 0; e < c.E; ++e) total += 1.0 / (1.0 + std::exp(-double(logits[t * c.E + e])));
        for (int e = 0; e < c.E; ++e) {
          const double z = logits[t * c.E + e];
          const double prob = c.sigmoid ? 1.0 / (1.0 + std::exp(-z)) / total : std::exp(z - max_logit) / sum;
          const bool nan_row = t == 3 || t == 5;  // a NaN logit makes the sum, so every score, NaN
          if (nan_row) {
            EXPECT_TRUE(std::isnan(got.probs[t * c.E + e]) == std::isnan(expected.probs[t * c.E + e]));
          } else {
            EXPECT_TRUE(near(got.probs[t * c.E + e], prob, 2e-6)) << "row " << t << " expert " << e;
          }
        }
      }
    }
}

TEST(RouterLanes, AWiderLaneGivesTheSameResult) {
  // 40 experts take two a lane; at four or eight a lane the extra places are empty.
  RouterParams p;
  p.num_experts = 40, p.top_k = 4;
  const int rows = 6;
  std::vector<float> logits(static_cast<std::size_t>(rows * p.num_experts));
  moe::testing::fill_normal(logits.data(), logits.size(), 1.5, 77);
  ASSERT_EQ(moe::kernels::router_experts_per_lane(p), 2);
  Routed two = sized(rows, p);
  route_in_lanes(2, logits, rows, p, nullptr, two);
  for (const int per_lane : {4, 8}) {
    Routed wide = sized(rows, p);
    route_in_lanes(per_lane, logits, rows, p, nullptr, wide);
    EXPECT_EQ(wide.indices, two.indices);
    EXPECT_EQ(wide.probs, two.probs);
    EXPECT_EQ(wide.weights, two.weights);
    EXPECT_EQ(wide.lse, two.lse);
  }
}

TEST(RouterLanes, TakesUpTo256ExpertsAnd32Choices) {
  RouterParams p;
  p.num_experts = 256, p.top_k = 32;
  EXPECT_EQ(moe::kernels::router_experts_per_lane(p), 8);
  p.num_experts = 257;
  EXPECT_EQ(moe::kernels::router_experts_per_lane(p), 0);
  p.num_experts = 64, p.top_k = 33;
  EXPECT_EQ(moe::kernels::router_experts_per_lane(p), 0);
  p.top_k = 8;
  EXPECT_EQ(moe::kernels::router_experts_per_lane(p), 2);
}

TEST(RouterLanes, BetterChoiceIsAMaximumUnderOneOrder) {
  // Any order of combining gives the same answer: every permutation's fold equals the
  // left-to-right walk with ranks_above (the first maximum, NaN last).
  const float nan = std::nanf("");
  std::vector<Choice> items = {{1.0f, 0, 0}, {nan, 0, 1}, {3.0f, 0, 2}, {3.0f, 0, 3}, {-0.0f, 0, 4}, {0.0f, 0, 5}};
  std::vector<int> order = {0, 1, 2, 3, 4, 5};
  do {
    Choice folded;
    for (int i : order) folded = moe::kernels::better_choice(folded, items[static_cast<std::size_t>(i)]);
    EXPECT_EQ(folded.index, 2);
  } while (std::next_permutation(order.begin(), order.end()));
  const Choice all_nan = moe::kernels::better_choice(Choice{nan, 0, 7}, Choice{nan, 0, 3});
  EXPECT_EQ(all_nan.index, 3);
  EXPECT_EQ(moe::kernels::better_choice(Choice{}, Choice{nan, 0, 9}).index, 9);
}

}  // namespace
