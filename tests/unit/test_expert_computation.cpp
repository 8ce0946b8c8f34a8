// moe_expert_computation and apply_expert_ffn against the float64 reference over a
// grid of shapes, activations and routing options; capacity and dropping.
#include <gtest/gtest.h>

#include <cmath>

#include "dispatch_plan.hpp"
#include "moe/moe.hpp"
#include "support/reference_moe.hpp"
#include "support/test_util.hpp"

using moe::Activation;
using moe::MOEConfig;
using moe::Tensor;
using moe::testing::random_tensor;
using moe::testing::relative_error;

namespace {

std::vector<Tensor<float>> random_experts(const MOEConfig& c, std::uint64_t seed) {
  const std::int64_t H = c.hidden_dim, F = c.expert_dim;
  std::vector<Tensor<float>> experts;
  for (std::int64_t e = 0; e < c.num_experts; ++e) {
    Tensor<float> flat({c.expert_param_count()});
    moe::testing::fill_normal(flat.data(), H * F, 1.0 / std::sqrt(double(H)), seed + 4 * e);
    moe::testing::fill_normal(flat.data() + H * F, F * H, 1.0 / std::sqrt(double(F)), seed + 4 * e + 1);
    moe::testing::fill_normal(flat.data() + 2 * H * F, F + H, 0.1, seed + 4 * e + 2);
    experts.push_back(std::move(flat));
  }
  return experts;
}

std::vector<const float*> pointers(const std::vector<Tensor<float>>& experts) {
  std::vector<const float*> out;
  for (const auto& e : experts) out.push_back(e.data());
  return out;
}

struct ForwardCase {
  std::int64_t E, k, H, F;
  std::vector<std::int64_t> shape;
  Activation act;
  bool drop, normalize;
  float capacity_factor;
  double gate_scale;  // larger → peakier routing → more drops
  bool expect_drops;
  std::string name() const {
    std::string n = "E" + std::to_string(E) + "_k" + std::to_string(k) + "_H" + std::to_string(H) + "_F" +
                    std::to_string(F) + "_shape";
    for (auto d : shape) n += "x" + std::to_string(d);
    n += std::string("_") + moe::activation_name(act) + (drop ? "_drop" : "_dropless") +
         (normalize ? "_normalized" : "_raw");
    return n;
  }
};

void PrintTo(const ForwardCase& c, std::ostream* os) { *os << c.name(); }

class ForwardMatchesReference : public ::testing::TestWithParam<ForwardCase> {};

TEST_P(ForwardMatchesReference, OutputWithinTolerance) {
  const ForwardCase p = GetParam();
  MOEConfig config(p.E, p.k, p.H, p.F, p.capacity_factor);
  config.activation = p.act;
  config.drop_tokens = p.drop;
  config.normalize_top_k = p.normalize;
  const std::uint64_t seed = 77 + p.E + 3 * p.k + 5 * p.H;
  const Tensor<float> x = random_tensor(p.shape, 1.0, seed);
  const Tensor<float> wg = random_tensor({p.H, p.E}, p.gate_scale / std::sqrt(double(p.H)), seed + 1);
  const auto experts = random_experts(config, seed + 2);

  auto [weights, indices, loss] = moe::moe_gating_forward(x, wg, config);
  const Tensor<float> out = moe::moe_expert_computation(x, weights, indices, experts, config);
  ASSERT_EQ(out.shape(), x.shape());

  const std::int64_t T = x.numel() / p.H;
  std::int64_t dropped = 0;
  moe::reference::capacity_mask(std::vector<std::int32_t>(indices.begin(), indices.end()), T, config, &dropped);
  if (p.expect_drops) ASSERT_GT(dropped, 0) << "this case is meant to exercise dropping";
  if (!p.drop) ASSERT_EQ(dropped, 0);

  const auto ref = moe::reference::expert_computation(
      x.data(), T, std::vector<std::int32_t>(indices.begin(), indices.end()),
      std::vector<float>(weights.begin(), weights.end()), pointers(experts), config);
  EXPECT_LE(relative_error(out.data(), ref.data(), T * p.H), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Grid, ForwardMatchesReference,
    ::testing::Values(
        ForwardCase{2, 1, 16, 32, {1, 16}, Activation::ReLU, true, true, 1.25f, 1.0, false},
        ForwardCase{2, 2, 16, 32, {7, 16}, Activation::GELU, true, true, 1.25f, 1.0, false},
        ForwardCase{8, 2, 32, 64, {4, 9, 32}, Activation::SiLU, true, true, 1.25f, 1.0, false},
        ForwardCase{8, 2, 32, 64, {33, 32}, Activation::ReLU, false, false, 1.25f, 8.0, false},
        ForwardCase{8, 2, 32, 64, {65, 32}, Activation::GELU, true, true, 1.0f, 8.0, true},
        ForwardCase{64, 8, 16, 32, {129, 16}, Activation::ReLU, true, true, 1.0f, 4.0, true},
        ForwardCase{64, 64, 16, 24, {5, 16}, Activation::GELU, false, true, 1.25f, 1.0, false},
        ForwardCase{64, 1, 24, 16, {77, 24}, Activation::SiLU, true, false, 1.0f, 4.0, true},
        ForwardCase{4, 2, 64, 256, {2, 3, 64}, Activation::SiLU, true, false, 2.0f, 1.0, false},
        ForwardCase{8, 2, 128, 512, {300, 128}, Activation::ReLU, true, true, 1.25f, 1.0, false}),
    [](const auto& info) { return info.param.name(); });

TEST(ExpertComputation, EmptyInputGivesEmptyOutput) {
  const MOEConfig config(4, 2, 16, 32);
  const Tensor<float> x({0, 16});
  const auto experts = random_experts(config, 5);
  const Tensor<float> out =
      moe::moe_expert_computation(x, Tensor<float>({0, 2}), Tensor<std::int32_t>({0, 2}), experts, config);
  EXPECT_EQ(out.shape(), (std::vector<std::int64_t>{0, 16}));
  const Tensor<float> out3 = moe::moe_expert_computation(Tensor<float>({2, 0, 16}), Tensor<float>({0, 2}),
                                                         Tensor<std::int32_t>({0, 2}), experts, config);
  EXPECT_EQ(out3.shape(), (std::vector<std::int64_t>{2, 0, 16}));
}

TEST(ApplyExpertFfn, MatchesReferenceForEveryActivation) {
  for (Activation act : {Activation::ReLU, Activation::GELU, Activation::SiLU}) {
    MOEConfig config(4, 2, 48, 96);
    config.activation = act;
    const auto experts = random_experts(config, 21);
    const Tensor<float> x = random_tensor({13, 48}, 1.0, 22);
    const Tensor<float> y = moe::apply_expert_ffn(x, experts[1], config);
    ASSERT_EQ(y.shape(), x.shape());
    std::vector<double> ref;
    for (std::int64_t r = 0; r < 13; ++r) {
      const auto row = moe::reference::expert_row(x.data() + r * 48, experts[1].data(), config);
      ref.insert(ref.end(), row.begin(), row.end());
    }
    EXPECT_LE(relative_error(y.data(), ref.data(), 13 * 48), 1e-5) << moe::activation_name(act);
  }
}

// Hand-made routing, E = 4, k = 2, T = 6, cf = 1.0: C = ceil(6·2/4) = 3.
//   slot 0: tokens 0..5 → experts 0 0 0 0 1 2
//   slot 1: tokens 0..5 → experts 1 1 1 0 0 3
// Slot-major admission: expert 0 admits tokens 0,1,2 from slot 0 and drops token 3's
// slot 0, then drops tokens 3 and 4's slot 1 (full); expert 1 admits token 4 (slot 0),
// then tokens 0 and 1 from slot 1 and drops token 2's; experts 2 and 3 keep theirs.
// Dropped: 4. Token 3 loses both slots and gets a zero output row.
TEST(Capacity, DroppedCountMatchesAHandComputedRouting) {
  MOEConfig config(4, 2, 16, 32, 1.0f);
  const std::vector<std::int32_t> idx = {0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 2, 3};
  const moe::DispatchPlan plan = moe::make_dispatch_plan(idx.data(), 6, config);
  EXPECT_EQ(plan.capacity, 3);
  EXPECT_EQ(plan.dropped, 4);
  const std::vector<std::uint8_t> expected_kept = {1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 1, 1};
  EXPECT_EQ(plan.kept, expected_kept);
  EXPECT_EQ(plan.kept_per_expert, (std::vector<std::int64_t>{3, 3, 1, 1}));

  const Tensor<float> x = random_tensor({6, 16}, 1.0, 31);
  Tensor<std::int32_t> indices({6, 2}, idx);
  Tensor<float> weights({6, 2}, std::vector<float>(12, 0.5f));
  const auto experts = random_experts(config, 32);
  const Tensor<float> out = moe::moe_expert_computation(x, weights, indices, experts, config);
  for (std::int64_t h = 0; h < 16; ++h) EXPECT_EQ(out[3 * 16 + h], 0.0f);
  // Token 2 keeps only slot 0: out = 0.5 · expert0(x2), not renormalised.
  const auto y = moe::reference::expert_row(x.data() + 2 * 16, experts[0].data(), config);
  std::vector<double> half(16);
  for (int h = 0; h < 16; ++h) half[h] = 0.5 * y[h];
  EXPECT_LE(relative_error(out.data() + 2 * 16, half.data(), 16), 1e-5);
}

TEST(Capacity, DroplessKeepsEverything) {
  MOEConfig config(4, 2, 16, 32, 1.0f);
  config.drop_tokens = false;
  std::vector<std::int32_t> idx;
  for (int t = 0; t < 50; ++t) idx.insert(idx.end(), {0, 1});  // everything on two experts
  const moe::DispatchPlan plan = moe::make_dispatch_plan(idx.data(), 50, config);
  EXPECT_EQ(plan.dropped, 0);
  EXPECT_EQ(plan.kept_per_expert, (std::vector<std::int64_t>{50, 50, 0, 0}));
  config.drop_tokens = true;
  EXPECT_EQ(moe::make_dispatch_plan(idx.data(), 50, config).dropped, 50);  // C = 25 each
}

TEST(Capacity, IsComputedInFloat64FromTheFloat32Factor) {
  // 1.1f is 1.10000002384…, so C = ceil(110.000002…) = 111, not 110.
  EXPECT_EQ(moe::expert_capacity(MOEConfig(10, 1, 8, 8, 1.1f), 1000), 111);
  EXPECT_EQ(moe::expert_capacity(MOEConfig(8, 2, 8, 8, 1.25f), 10), 4);  // ceil(3.125)
  EXPECT_EQ(moe::expert_capacity(MOEConfig(8, 2, 8, 8, 1.0f), 0), 0);
}

TEST(Grouping, EachExpertsRowsAreContiguousAndStable) {
  moe::ExpertAssignments a;
  a.num_experts = 3;
  a.output_rows = 4;
  a.offsets = {0, 2, 3, 3, 5};
  a.input_row = {0, 0, 1, 3, 3};
  a.expert = {2, 0, 2, 0, 1};
  a.weight = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
  const moe::ExpertGrouping g = moe::group_by_expert(a);
  EXPECT_EQ(g.expert_offsets, (std::vector<std::int64_t>{0, 2, 3, 5}));
  EXPECT_EQ(g.grouped_input_row, (std::vector<std::int32_t>{0, 3, 3, 0, 1}));
  EXPECT_EQ(g.grouped_row_of, (std::vector<std::int32_t>{3, 0, 4, 1, 2}));
}

// The send layout puts a rank's own rows last (they stay in place, docs/design.md §2),
// and each record says whether it starts its row, which is all the owner needs.
TEST(SendLayout, OwnRowsLastAndRecordsDelimitTheRows) {
  const moe::MOEConfig config(4, 2, 8, 8);  // 2 ranks: rank 0 owns experts 0–1, rank 1 owns 2–3
  const std::vector<std::int32_t> idx = {0, 1, 2, 0, 3, 2};  // 3 tokens, top-2
  const std::vector<float> w = {0.5f, 0.5f, 0.6f, 0.4f, 0.7f, 0.3f};
  const moe::DispatchPlan plan = moe::make_dispatch_plan(idx.data(), 3, config);
  const moe::SendLayout layout = moe::make_send_layout(plan, idx.data(), w.data(), 2, 0, moe::Traffic::Deduplicated);
  // To rank 1 (first, not own): token 1 (expert 2), token 2 (experts 3 and 2 in one row).
  // To rank 0 (own, last): token 0 (experts 0 and 1 in one row), token 1 (expert 0).
  EXPECT_EQ(layout.rows_per_rank, (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(layout.row_token, (std::vector<std::int32_t>{1, 2, 0, 1}));
  EXPECT_EQ(layout.own_rows(), 2);
  std::vector<int> starts, experts;
  for (const moe::AssignmentRecord& r : layout.assignments)
    starts.push_back(static_cast<int>(r.starts_row)), experts.push_back(static_cast<int>(r.local_expert));
  EXPECT_EQ(starts, (std::vector<int>{1, 1, 0, 1, 0, 1}));
  EXPECT_EQ(experts, (std::vector<int>{0, 1, 0, 0, 1, 0}));
  EXPECT_EQ(layout.assignment_slot, (std::vector<std::int32_t>{2, 4, 5, 0, 1, 3}));

  // The owner's view of rank 1's block: 2 rows, the second with two assignments.
  const std::vector<moe::AssignmentRecord> to_rank1(layout.assignments.begin(), layout.assignments.begin() + 3);
  const moe::ExpertAssignments got = moe::received_assignments(to_rank1.data(), 3, 2, 2);
  EXPECT_EQ(got.offsets, (std::vector<std::int32_t>{0, 1, 3}));
  EXPECT_EQ(got.input_row, (std::vector<std::int32_t>{0, 1, 1}));
  EXPECT_EQ(got.expert, (std::vector<std::int32_t>{0, 1, 0}));
  EXPECT_FLOAT_EQ(got.weight[1], 0.7f);
  // Records that delimit another number of rows than arrived are an error, not a misread.
  EXPECT_THROW(moe::received_assignments(to_rank1.data(), 3, 3, 2), moe::Error);
}

}  // namespace
