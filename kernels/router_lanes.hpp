// One token's routing split across the 32 lanes of a warp (docs/design.md §4b): the
// router kernel's form for up to 256 experts and k ≤ 32. A thread per token
// (route_row) walked the row k + 3 times alone: 265 µs for 8 192 tokens of 64 experts
// (k = 8) on an H200, about a twelfth of a fine-grained forward. Here each lane holds
// the scores of experts lane, lane + 32, …, and every whole-row step (the maximum, the
// sums, each of the k choices, each allowed group) is a reduction across the lanes.
//
// It is written once, against a Warp that supplies the lane's number and the two
// reductions: the kernel's Warp shuffles registers; the unit test's runs 32 host
// threads, so this code is tested on the CPU against route_row.
//
// What it returns, against route_row:
// - the indices are the same: every choice is a maximum under one total order (a
//   number beats NaN, then the larger score, then the lower index: ranks_above and
//   select_top_k's rule), and a maximum under a total order does not depend on the
//   order of comparisons;
// - the softmax maximum is the same (the same order);
// - the sums (of exps, and of sigmoid scores) are added as a tree over the lanes, not
//   left to right, so probs, weights and lse can differ from route_row's in the last
//   bits. Every lane gets the same bits (a butterfly's partners add the same two
//   numbers), so the result is one function of the row on any GPU and launch shape.
#pragma once

#include <cstdint>

#include "kernels/host_device.hpp"
#include "kernels/router_row.hpp"

namespace moe::kernels {

constexpr int kRouterLanes = 32;
constexpr int kRouterMaxSlots = kRouterLanes;  // k ≤ 32: lane j keeps slot j's choice

// The router's score of a logit (the softmax probability, or the sigmoid score), from
// the row's softmax statistics; the same arithmetic as route_row's.
struct ScoreOfLogit {
  bool sigmoid;
  float max_logit, inv_sum;
  MOE_HD float operator()(float logit) const {
    return sigmoid ? kernels::sigmoid(logit) : expf(logit - max_logit) * inv_sum;
  }
};

// route_row for a whole warp: every lane calls it with the same row. Experts
// lane + 32·i for i < kPerLane (so E ≤ 32·kPerLane ≤ 1024); k ≤ 32; n_group ≤ 64 and divides E.
// Writes probs (each lane its experts'), indices and weights (lane j slot j), and
// returns log Σ exp(logits) on every lane.
template <int kPerLane, class Warp>
MOE_HD float route_row_across_lanes(Warp& warp, const float* logits, const RouterParams& p, const float* expert_bias,
                                    float* probs, std::int32_t* indices, float* weights) {
  static_assert(kPerLane >= 1 && kPerLane <= 32, "a lane's chosen experts are a 32-bit mask");
  const int lane = warp.lane(), E = p.num_experts;
  auto expert = [lane](int i) { return lane + kRouterLanes * i; };

  // Softmax statistics: the maximum (route_row's: of the numbers, NaN when all are),
  // then the sum of exps.
  float logit[kPerLane] = {}, value[kPerLane] = {}, key[kPerLane] = {};
  Choice top;
  for (int i = 0; i < kPerLane; ++i) {
    if (expert(i) >= E) break;
    logit[i] = logits[expert(i)];
    top = better_choice(top, Choice{logit[i], 0.0f, expert(i)});
  }
  const float max_logit = warp.best(top).key;
  float sum = 0.0f;
  for (int i = 0; i < kPerLane && expert(i) < E; ++i) sum += expf(logit[i] - max_logit);
  sum = warp.sum(sum);
  const float lse = max_logit + logf(sum);

  // Scores (value) and selection scores (key).
  const ScoreOfLogit score{p.sigmoid, max_logit, 1.0f / sum};
  float total = 0.0f;
  for (int i = 0; i < kPerLane && expert(i) < E; ++i) {
    value[i] = score(logit[i]);
    key[i] = p.sigmoid && expert_bias ? value[i] + expert_bias[expert(i)] : value[i];
    total += value[i];
  }

  // Group-limited routing (n_group divides E, config.cpp): lane g scores groups g and
  // g + 32 from the row (the same arithmetic as the keys), then topk_group rounds each
  // allow the best group left.
  std::uint64_t allowed = ~std::uint64_t{0};
  const int groups = p.n_group > 1 ? p.n_group : 1, group_size = E / groups;
  if (groups > 1) {
    auto key_of = [&](int e) {
      const float s = score(logits[e]);
      return p.sigmoid && expert_bias ? s + expert_bias[e] : s;
    };
    auto group = [lane](int m) { return lane + kRouterLanes * m; };
    float group_score[2] = {};
    for (int m = 0; m < 2 && group(m) < groups; ++m)
      group_score[m] = group_top_two_sum(key_of, group(m) * group_size, group_size);
    allowed = 0;
    for (int round = 0; round < p.topk_group; ++round) {
      Choice best;
      for (int m = 0; m < 2 && group(m) < groups; ++m)
        if (!(allowed >> group(m) & 1u)) best = better_choice(best, Choice{group_score[m], 0.0f, group(m)});
      best = warp.best(best);
      if (best.index >= 0) allowed |= std::uint64_t{1} << best.index;
    }
  }

  // k rounds, each choosing the best expert left among the allowed groups; lane j
  // keeps slot j. The selected sum is added in slot order, as route_row adds it.
  std::uint32_t chosen = 0;  // bit i: expert(i) is chosen
  Choice my_slot;
  float selected = 0.0f;
  for (int j = 0; j < p.top_k; ++j) {
    Choice best;
    for (int i = 0; i < kPerLane && expert(i) < E; ++i)
      if (!(chosen >> i & 1u) && (allowed >> (expert(i) / group_size) & 1u))
        best = better_choice(best, Choice{key[i], value[i], expert(i)});
    best = warp.best(best);
    if (best.index >= 0 && best.index % kRouterLanes == lane) chosen |= 1u << (best.index / kRouterLanes);
    if (j == lane) my_slot = best;
    if (best.index >= 0) selected += best.value;
  }
  if (p.sigmoid) selected += kSigmoidNormEps;
  const float factor = p.normalize ? p.scale / selected : p.scale;
  if (lane < p.top_k) {
    indices[lane] = my_slot.index;
    weights[lane] = my_slot.value * factor;
  }
  const float inv_total = p.sigmoid ? 1.0f / warp.sum(total) : 1.0f;
  for (int i = 0; i < kPerLane && expert(i) < E; ++i) probs[expert(i)] = p.sigmoid ? value[i] * inv_total : value[i];
  return lse;
}

// The smallest lane width (experts per lane: 1, 2, 4 or 8) that holds E experts, or 0
// when route_row_across_lanes does not take the router (over 256 experts, k > 32, more
// than 64 groups): then a thread per token runs route_row.
inline int router_experts_per_lane(const RouterParams& p) {
  if (p.top_k > kRouterMaxSlots || p.n_group > 64) return 0;
  for (int per_lane = 1; per_lane <= 8; per_lane *= 2)
    if (p.num_experts <= kRouterLanes * per_lane) return per_lane;
  return 0;
}

}  // namespace moe::kernels
