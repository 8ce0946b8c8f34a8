// The GPU's single-rank plan (kernels/plan_steps.hpp, one function per thread) run on
// the host, step by step as the kernels run it, against the host plan
// (src/dispatch_plan.cpp) and against the definition of the capacity rule: the GPU's
// plan logic is tested on machines without one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <random>
#include <tuple>
#include <vector>

#include "dispatch_plan.hpp"
#include "kernels/ops.hpp"
#include "kernels/plan_steps.hpp"
#include "layer_access.hpp"
#include "moe/layer.hpp"
#include "support/random_architecture.hpp"
#include "support/test_util.hpp"

namespace plan = moe::kernels::plan;

namespace {

struct StepResult {
  std::vector<std::uint8_t> kept;
  std::vector<std::int64_t> kept_per_expert;
  std::vector<std::int32_t> grouped_tokens, combine_offsets, combine_sources, entry_slot;
  std::vector<float> combine_weights;
  std::int64_t entries = 0;
};

StepResult run_steps(const std::vector<std::int32_t>& indices, const std::vector<float>& weights, std::int64_t T,
                     std::int64_t k, std::int64_t E, std::int64_t capacity, std::int64_t rows_per_expert = 0,
                     plan::Padding padding = plan::Padding::Room) {
  const std::int64_t n = T * k, chunks = plan::chunk_count(n);
  // Scratch filled with garbage: a step that reads what it did not write shows up.
  const std::int32_t junk = 0x5a5a5a5a;
  std::vector<std::int32_t> slot_major(n, junk), counts(E * chunks, junk), bases(E * chunks, junk), group_bases(E * chunks, junk),
      entry_bases(chunks, junk), row_of(n, junk);
  std::vector<std::int64_t> offsets(E + 1, junk), entries(1, junk);
  StepResult r;
  r.kept.assign(n, 7);
  r.kept_per_expert.assign(E, junk);
  r.grouped_tokens.assign(rows_per_expert > 0 ? std::max(E * rows_per_expert, n) : n, junk);
  r.combine_offsets.assign(T + 1, junk);
  r.combine_sources.assign(n, junk);
  r.entry_slot.assign(n, junk);
  r.combine_weights.assign(n, -99.0f);
  plan::PlanArrays p{indices.data(), weights.data(), T, k, E, capacity, rows_per_expert, slot_major.data(), counts.data(), bases.data(),
                     group_bases.data(), entry_bases.data(), r.kept.data(), row_of.data(), offsets.data(),
                     entries.data(), r.kept_per_expert.data(), r.grouped_tokens.data(), r.combine_offsets.data(),
                     r.combine_sources.data(), r.combine_weights.data(), r.entry_slot.data()};
  p.padding = padding;
  plan::run_plan_steps_serially(p);
  r.entries = entries[0];
  return r;
}

moe::MOEConfig config_of(std::int64_t E, std::int64_t k, float capacity_factor, bool drop) {
  moe::MOEConfig c;
  c.num_experts = E;
  c.top_k = k;
  c.hidden_dim = 8;
  c.expert_dim = 8;
  c.capacity_factor = capacity_factor;
  c.drop_tokens = drop;
  return c;
}

// (T, k, E, capacity factor, drop)
using PlanShape = std::tuple<std::int64_t, std::int64_t, std::int64_t, float, bool>;

// The plan steps on skewed routings of one shape against the host plan and the
// capacity rule's definition, packed and, with a capacity, padded to the room.
void expect_plan_steps_to_match_the_host_plan(const PlanShape& shape) {
  const auto [T, k, E, cf, drop] = shape;
  SCOPED_TRACE(::testing::Message() << "T " << T << " k " << k << " E " << E << " cf " << cf
                                    << (drop ? " drop" : " dropless"));
  const moe::MOEConfig config = config_of(E, k, cf, drop);
  const std::vector<std::int32_t> indices = moe::testing::skewed_choices(T, k, E, static_cast<std::uint32_t>(T * 31 + E));
  std::vector<float> weights(indices.size());
  for (std::size_t a = 0; a < weights.size(); ++a) weights[a] = 0.5f + 0.001f * static_cast<float>(a);

  const moe::DispatchPlan host = moe::make_dispatch_plan(indices.data(), T, config);
  const moe::ExpertAssignments work = moe::token_assignments(host, indices.data(), weights.data());
  const moe::ExpertGrouping grouping = moe::group_by_expert(work);
  const std::int64_t capacity = std::min<std::int64_t>(host.capacity, T * k);
  const StepResult steps = run_steps(indices, weights, T, k, E, capacity);

  // The capacity rule from its definition: walking slot 0 of every token, then slot 1,
  // …, an assignment is kept while its expert has admitted fewer than C.
  std::vector<std::int64_t> admitted(E, 0);
  for (std::int64_t j = 0; j < k; ++j)
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int64_t a = t * k + j;
      const bool keep = admitted[indices[a]] < host.capacity;
      admitted[indices[a]] += keep ? 1 : 0;
      ASSERT_EQ(steps.kept[a], keep ? 1 : 0) << "token " << t << " slot " << j;
    }
  // More assignments than the experts' room must drop some (every case with a factor
  // under 1 that the hand-picked shapes list).
  if (drop && T * k > E * host.capacity) EXPECT_GT(host.dropped, 0) << "the case should drop some assignments";

  EXPECT_EQ(steps.kept_per_expert, host.kept_per_expert);
  const auto A = static_cast<std::size_t>(work.size());
  ASSERT_EQ(steps.entries, static_cast<std::int64_t>(A));
  auto first = [&](const auto& v) { return std::vector<typename std::decay_t<decltype(v)>::value_type>(v.begin(), v.begin() + A); };
  EXPECT_EQ(first(steps.grouped_tokens), grouping.grouped_input_row);
  EXPECT_EQ(steps.combine_offsets, work.offsets);
  EXPECT_EQ(first(steps.combine_sources), grouping.grouped_row_of);
  EXPECT_EQ(first(steps.combine_weights), work.weight);
  EXPECT_EQ(first(steps.entry_slot), work.slot);
  // Grouped rows in (expert, token) order: each expert's block, tokens ascending.
  for (std::int64_t e = 0; e < E; ++e)
    for (std::int64_t g = grouping.expert_offsets[e] + 1; g < grouping.expert_offsets[e + 1]; ++g)
      EXPECT_LE(steps.grouped_tokens[g - 1], steps.grouped_tokens[g]);

  // Padded to R = min(C, T) rows per expert (distinct experts per token: no expert
  // keeps more than T): expert e's kept rows are the packed plan's, moved to e·R; the
  // rest of its R rows are padding (-1); the combine's entries name the moved rows.
  if (!drop) return;  // padding needs a capacity
  const std::int64_t R = std::min<std::int64_t>(host.capacity, T);
  const StepResult padded = run_steps(indices, weights, T, k, E, capacity, R);
  EXPECT_EQ(padded.kept, steps.kept);
  EXPECT_EQ(padded.kept_per_expert, host.kept_per_expert);
  ASSERT_GE(padded.grouped_tokens.size(), static_cast<std::size_t>(E * R));
  std::vector<std::int32_t> moved(A);  // each packed grouped row's padded place
  for (std::int64_t e = 0; e < E; ++e) {
    const std::int64_t begin = grouping.expert_offsets[e], kept = grouping.expert_offsets[e + 1] - begin;
    ASSERT_LE(kept, R);
    for (std::int64_t r = 0; r < R; ++r) {
      const std::int32_t want = r < kept ? grouping.grouped_input_row[begin + r] : -1;
      EXPECT_EQ(padded.grouped_tokens[e * R + r], want) << "expert " << e << " row " << r;
      if (r < kept) moved[begin + r] = static_cast<std::int32_t>(e * R + r);
    }
  }
  std::vector<std::int32_t> want_sources(A);
  for (std::size_t a = 0; a < A; ++a) want_sources[a] = moved[grouping.grouped_row_of[a]];
  EXPECT_EQ(first(padded.combine_sources), want_sources);
  EXPECT_EQ(padded.combine_offsets, work.offsets);
  EXPECT_EQ(first(padded.combine_weights), work.weight);
  EXPECT_EQ(first(padded.entry_slot), work.slot);
}

class PlanSteps : public ::testing::TestWithParam<PlanShape> {};

TEST_P(PlanSteps, MatchTheHostPlanAndTheCapacityRule) { expect_plan_steps_to_match_the_host_plan(GetParam()); }

// Random shapes beyond the hand-picked ones: up to 3 000 tokens, 300 experts, top-8,
// capacity factors from a quarter to 3 (MOE_TEST_SWEEP_SEED and _SCALE soak further).
TEST(PlanSteps, MatchTheHostPlanOnRandomShapes) {
  std::mt19937_64 rng(moe::testing::sweep_seed(2911));
  for (int d = 0; d < 24 * moe::testing::sweep_scale(); ++d) {
    const std::int64_t E = moe::testing::draw(rng, 1, 300);
    const std::int64_t k = moe::testing::draw(rng, 1, std::min<std::int64_t>(E, 8));
    const std::int64_t T = moe::testing::draw(rng, 1, 3000);
    const float cf = std::uniform_real_distribution<float>(0.25f, 3.0f)(rng);
    expect_plan_steps_to_match_the_host_plan({T, k, E, cf, moe::testing::draw(rng, 0, 3) != 0});
  }
}

// Padded to the most kept rows (Padding::Most, the padded layout): from the definition,
// every expert gets M = the most rows any expert kept, rounded up to 8, when M fits in
// the room R and no expert kept nothing: the packed plan's rows moved to e·M, the rest
// of each expert's M rows padding (-1), the combine's entries naming the moved rows;
// when M exceeds R or an expert is empty, the packed plan itself. Padding::RoomIfFits
// (speculated rows) pads in the same cases, to R rows each. Balanced routings (which
// pad), skewed ones (which do not), and fewer assignments than experts (which fit the
// room but leave experts empty), with and without drops.
TEST(PlanSteps, PadToTheMostRowsKeptWhenTheyFit) {
  struct Case {
    std::int64_t T, k, E;
    float capacity_factor;
    bool drop, balanced;
    std::int64_t room;
  };
  int padded_cases = 0, packed_cases = 0, empty_expert_cases = 0;
  for (const Case& c : {Case{300, 2, 8, 1.0f, false, true, 96}, Case{300, 2, 8, 1.0f, false, false, 96},
                        Case{1000, 8, 64, 1.0f, false, true, 160}, Case{129, 2, 8, 1.25f, true, false, 40},
                        Case{129, 2, 8, 1.25f, true, true, 40}, Case{64, 6, 256, 1.0f, false, true, 8},
                        Case{5, 1, 4, 1.0f, false, true, 2}, Case{20, 2, 64, 1.0f, false, true, 8}})
    for (const plan::Padding padding : {plan::Padding::Most, plan::Padding::RoomIfFits}) {
      SCOPED_TRACE(::testing::Message() << "T=" << c.T << " k=" << c.k << " E=" << c.E << " room " << c.room
                                        << (c.balanced ? " balanced" : " skewed")
                                        << (padding == plan::Padding::Most ? ", to the most" : ", to the room"));
      const moe::MOEConfig config = config_of(c.E, c.k, c.capacity_factor, c.drop);
      std::vector<std::int32_t> indices(static_cast<std::size_t>(c.T * c.k));
      if (c.balanced) {  // token t's slots take experts (t·k + j) mod E: even loads
        for (std::size_t a = 0; a < indices.size(); ++a)
          indices[a] = static_cast<std::int32_t>(a % static_cast<std::size_t>(c.E));
      } else {
        indices = moe::testing::skewed_choices(c.T, c.k, c.E, static_cast<std::uint32_t>(c.T + c.E));
      }
      std::vector<float> weights(indices.size());
      for (std::size_t a = 0; a < weights.size(); ++a) weights[a] = 0.25f + 0.001f * static_cast<float>(a);
      const moe::DispatchPlan host = moe::make_dispatch_plan(indices.data(), c.T, config);
      const moe::ExpertAssignments work = moe::token_assignments(host, indices.data(), weights.data());
      const moe::ExpertGrouping grouping = moe::group_by_expert(work);
      const std::int64_t capacity = std::min<std::int64_t>(host.capacity, c.T * c.k);
      const StepResult packed = run_steps(indices, weights, c.T, c.k, c.E, capacity);
      const StepResult got = run_steps(indices, weights, c.T, c.k, c.E, capacity, c.room, padding);
      const auto A = static_cast<std::size_t>(work.size());
      ASSERT_EQ(got.entries, static_cast<std::int64_t>(A));
      EXPECT_EQ(got.kept_per_expert, host.kept_per_expert);
      EXPECT_EQ(got.combine_offsets, work.offsets);
      auto first = [&](const auto& v) {
        return std::vector<typename std::decay_t<decltype(v)>::value_type>(v.begin(), v.begin() + A);
      };
      EXPECT_EQ(first(got.combine_weights), work.weight);
      EXPECT_EQ(first(got.entry_slot), work.slot);

      std::int64_t most = 0;
      for (std::int64_t kept : host.kept_per_expert) most = std::max(most, kept);
      const std::int64_t M = (most + 7) / 8 * 8;
      const bool empty_expert =
          std::find(host.kept_per_expert.begin(), host.kept_per_expert.end(), 0) != host.kept_per_expert.end();
      const bool pads = M <= c.room && !empty_expert;
      const std::int64_t rows = padding == plan::Padding::Most ? M : c.room;  // each expert's, when it pads
      EXPECT_EQ(moe::kernels::plan::padded_rows(host.kept_per_expert.data(), c.E, c.room, padding), pads ? rows : 0);
      // Past the layout's rows nothing is written (run_steps fills with junk), except
      // where RoomIfFits packs: its E·R rows past the A kept are padding (-1), since the
      // products queued for the speculated layout read them.
      const std::size_t layout_rows = pads ? static_cast<std::size_t>(c.E * rows) : A;
      const std::size_t speculated_rows =
          !pads && padding == plan::Padding::RoomIfFits ? static_cast<std::size_t>(c.E * c.room) : layout_rows;
      for (std::size_t g = layout_rows; g < got.grouped_tokens.size(); ++g)
        ASSERT_EQ(got.grouped_tokens[g], g < speculated_rows ? -1 : 0x5a5a5a5a)
            << "row " << g << " past the layout's " << layout_rows;
      if (!pads) {  // packed: the packed plan's arrays
        ++packed_cases;
        empty_expert_cases += M <= c.room;
        EXPECT_EQ(first(got.grouped_tokens), first(packed.grouped_tokens));
        EXPECT_EQ(first(got.combine_sources), first(packed.combine_sources));
        continue;
      }
      ++padded_cases;
      std::vector<std::int32_t> moved(A);
      for (std::int64_t e = 0; e < c.E; ++e) {
        const std::int64_t begin = grouping.expert_offsets[e], kept = grouping.expert_offsets[e + 1] - begin;
        for (std::int64_t r = 0; r < rows; ++r) {
          EXPECT_EQ(got.grouped_tokens[e * rows + r], r < kept ? grouping.grouped_input_row[begin + r] : -1)
              << "expert " << e << " row " << r;
          if (r < kept) moved[begin + r] = static_cast<std::int32_t>(e * rows + r);
        }
      }
      std::vector<std::int32_t> want_sources(A);
      for (std::size_t a = 0; a < A; ++a) want_sources[a] = moved[grouping.grouped_row_of[a]];
      EXPECT_EQ(first(got.combine_sources), want_sources);
    }
  EXPECT_GT(padded_cases, 0);
  EXPECT_GT(packed_cases, 0);
  EXPECT_GT(empty_expert_cases, 0);
}

// (T, k, E, capacity factor, drop): chunk edges (T·k of 256 and just past), one
// chunk, many chunks, few and many experts, dropless, and capacities that admit every
// assignment (the plan's admit_all path: dropless, 1 token, a factor of 8).
INSTANTIATE_TEST_SUITE_P(Shapes, PlanSteps,
                         ::testing::Values(std::make_tuple(1, 1, 1, 1.0f, true), std::make_tuple(7, 2, 4, 0.5f, true),
                                           std::make_tuple(128, 2, 8, 0.75f, true),
                                           std::make_tuple(129, 2, 8, 1.25f, true),
                                           std::make_tuple(300, 4, 16, 0.6f, true),
                                           std::make_tuple(1000, 8, 64, 1.0f, true),
                                           std::make_tuple(513, 2, 8, 1.0f, false),
                                           std::make_tuple(1000, 8, 64, 1.0f, false),
                                           std::make_tuple(7, 2, 4, 8.0f, true),  // a capacity of T·k and more
                                           std::make_tuple(64, 6, 256, 2.0f, true)));

}  // namespace

// ---- The whole layer with the plan steps (MOE_SINGLE_RANK_PLAN=steps) ----

namespace {

// Sets MOE_SINGLE_RANK_PLAN for the scope of the object.
class PlanChoice : public moe::testing::ScopedEnvironment {
 public:
  explicit PlanChoice(const char* value) : ScopedEnvironment("MOE_SINGLE_RANK_PLAN", value) {}
};

struct LayerRun {
  moe::ForwardResult forward;
  moe::Tensor<float> dx, gate_grad;
  std::vector<moe::Tensor<float>> expert_grads;
  moe::Tensor<float> shared_grad;
};

LayerRun run_layer(const moe::MOEConfig& config, const char* plan_choice, std::int64_t tokens,
                   bool static_shapes = false, double gate_scale = 2.0) {
  const PlanChoice choice(plan_choice);
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::LayerOptions options;
  options.aux_loss_coef = 0.01f;
  options.static_shapes = static_shapes;
  moe::MoELayer layer(config, *comm, 5, options);
  // By default a peaky router, so that the capacity drops some assignments.
  layer.set_gate_weights(moe::testing::random_tensor({config.hidden_dim, config.num_experts}, gate_scale, 6));
  const moe::Tensor<float> x = moe::testing::random_tensor({tokens, config.hidden_dim}, 1.0, 7);
  LayerRun run;
  run.forward = layer.forward(x, moe::Pass::Training);
  run.dx = layer.backward(moe::testing::random_tensor({tokens, config.hidden_dim}, 1.0, 8));
  run.gate_grad = layer.gate_grad();
  for (std::int64_t e = 0; e < config.num_experts; ++e) run.expert_grads.push_back(layer.expert_grad(e));
  run.shared_grad = layer.shared_expert_grad();
  return run;
}

// A small DeepSeek-style layer (docs/design.md §1b): glu experts without biases, the
// sigmoid router with groups, a shared expert.
moe::MOEConfig deepseek_like() {
  moe::MOEConfig c(16, 4, 12, 8, 1.0f);
  c.expert_kind = moe::ExpertKind::GLU;
  c.activation = moe::Activation::SiLU;
  c.expert_bias = false;
  c.router = moe::RouterKind::Sigmoid;
  c.n_group = 4;
  c.topk_group = 2;
  c.shared_expert_dim = 8;
  return c;
}

void expect_same(const moe::Tensor<float>& a, const moe::Tensor<float>& b, const char* what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin())) << what << " differs";
}

// The plan steps give the host plan's arrays, so the layer computes the same bits:
// forward, statistics and every gradient, with drops, dropless, and the architectures
// of docs/design.md §1b.
TEST(PlanStepsInTheLayer, GiveTheHostPlansBits) {
  std::vector<moe::MOEConfig> configs;
  moe::MOEConfig drops(8, 2, 12, 16, 1.0f);
  configs.push_back(drops);
  moe::MOEConfig dropless = drops;
  dropless.drop_tokens = false;
  configs.push_back(dropless);
  const moe::MOEConfig deepseek = deepseek_like();
  configs.push_back(deepseek);
  for (const moe::MOEConfig& config : configs) {
    SCOPED_TRACE(config.to_string());
    const std::int64_t T = 300;  // T·k crosses chunks of 256
    const LayerRun host = run_layer(config, "host", T), steps = run_layer(config, "steps", T);
    expect_same(host.forward.output, steps.forward.output, "output");
    ASSERT_EQ(host.forward.expert_indices.shape(), steps.forward.expert_indices.shape());
    EXPECT_TRUE(std::equal(host.forward.expert_indices.begin(), host.forward.expert_indices.end(),
                           steps.forward.expert_indices.begin()));
    EXPECT_EQ(host.forward.stats.dropped, steps.forward.stats.dropped);
    if (config.drop_tokens) EXPECT_GT(host.forward.stats.dropped, 0) << "meant to drop";
    EXPECT_EQ(host.forward.stats.tokens_per_expert, steps.forward.stats.tokens_per_expert);
    EXPECT_EQ(host.forward.stats.chosen_per_expert, steps.forward.stats.chosen_per_expert);
    EXPECT_EQ(host.forward.aux_loss, steps.forward.aux_loss);
    expect_same(host.dx, steps.dx, "dx");
    expect_same(host.gate_grad, steps.gate_grad, "gate gradient");
    for (std::size_t e = 0; e < host.expert_grads.size(); ++e) expect_same(host.expert_grads[e], steps.expert_grads[e], "expert gradient");
    expect_same(host.shared_grad, steps.shared_grad, "shared expert gradient");
  }
}

// The shared expert queued during the wait for the routing (MOE_SHARED_EXPERT=early, the
// default) or after the routed experts (late): the same bits, forward and backward,
// with the shared gate and without, with either plan; an unknown order is an error
// naming it.
TEST(SharedExpertOrder, EarlyOrLateGivesTheSameBits) {
  struct Order : moe::testing::ScopedEnvironment {
    explicit Order(const char* value) : ScopedEnvironment("MOE_SHARED_EXPERT", value) {}
  };
  moe::MOEConfig gated = deepseek_like();
  gated.router = moe::RouterKind::Softmax, gated.n_group = 1, gated.topk_group = 1;
  gated.shared_gate = true;  // Qwen2-MoE's
  for (const moe::MOEConfig& config : {deepseek_like(), gated})
    for (const char* plan : {"host", "steps"}) {
      SCOPED_TRACE(::testing::Message() << config.to_string() << " plan " << plan);
      LayerRun early, late;
      {
        const Order order("early");
        early = run_layer(config, plan, 300);
      }
      {
        const Order order("late");
        late = run_layer(config, plan, 300);
      }
      expect_same(early.forward.output, late.forward.output, "output");
      expect_same(early.dx, late.dx, "dx");
      expect_same(early.gate_grad, late.gate_grad, "gate gradient");
      expect_same(early.shared_grad, late.shared_grad, "shared expert gradient");
      EXPECT_GT(early.forward.stats.times.shared_expert, 0.0);
    }
  const Order bad("first");
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  EXPECT_MOE_ERROR(moe::MoELayer(deepseek_like(), *comm, 1), "MOE_SHARED_EXPERT = 'first'", "expected early");
}

void expect_close(const moe::Tensor<float>& a, const moe::Tensor<float>& b, const char* what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  EXPECT_LE(moe::testing::relative_error(a.data(), b.data(), a.numel()), 1e-6) << what;
}

// A padded layout's run against the packed one: the same routing, drops and statistics
// exactly; the output and every gradient to 1e-6 (normwise relative; only the GEMMs'
// row counts differ, which may change their blocking).
void expect_padded_gives_packed(const LayerRun& packed, const LayerRun& padded) {
  expect_close(packed.forward.output, padded.forward.output, "output");
  EXPECT_TRUE(std::equal(packed.forward.expert_indices.begin(), packed.forward.expert_indices.end(),
                         padded.forward.expert_indices.begin()));
  EXPECT_EQ(packed.forward.stats.dropped, padded.forward.stats.dropped);
  EXPECT_EQ(packed.forward.stats.tokens_per_expert, padded.forward.stats.tokens_per_expert);
  EXPECT_EQ(packed.forward.aux_loss, padded.forward.aux_loss);
  expect_close(packed.dx, padded.dx, "dx");
  expect_close(packed.gate_grad, padded.gate_grad, "gate gradient");
  for (std::size_t e = 0; e < packed.expert_grads.size(); ++e)
    expect_close(packed.expert_grads[e], padded.expert_grads[e], "expert gradient");
  expect_close(packed.shared_grad, padded.shared_grad, "shared expert gradient");
}

// Capacity-padded experts (LayerOptions::static_shapes) compute what the packed layout
// computes: the same routing, drops and statistics exactly; the output and every
// gradient to 1e-6 (normwise relative; only the GEMMs' row counts differ, which may
// change their blocking). Few tokens (the decode case), chunk edges, and a case where
// R = T < C.
TEST(StaticShapes, GiveThePackedLayersResults) {
  std::vector<std::pair<moe::MOEConfig, std::int64_t>> cases;
  moe::MOEConfig drops(8, 2, 12, 16, 1.0f);
  for (const std::int64_t T : {1, 3, 300}) cases.emplace_back(drops, T);
  moe::MOEConfig roomy(4, 3, 12, 16, 2.0f);  // C = 1.5T: R = T
  cases.emplace_back(roomy, 40);
  const moe::MOEConfig deepseek = deepseek_like();
  cases.emplace_back(deepseek, 300);
  moe::MOEConfig glu_biased = drops;
  glu_biased.expert_kind = moe::ExpertKind::GLU;
  glu_biased.activation = moe::Activation::SiLU;
  cases.emplace_back(glu_biased, 77);
  for (const auto& [config, T] : cases) {
    SCOPED_TRACE(::testing::Message() << config.to_string() << " T=" << T);
    expect_padded_gives_packed(run_layer(config, "host", T), run_layer(config, "", T, true));
  }
}

// Sets MOE_EXPERT_ROWS for the scope of the object.
class ExpertRowsChoice : public moe::testing::ScopedEnvironment {
 public:
  explicit ExpertRowsChoice(const char* value) : ScopedEnvironment("MOE_EXPERT_ROWS", value) {}
};

// Experts padded to the most rows kept (MOE_EXPERT_ROWS=padded) compute what the packed
// layout computes, as capacity-padded ones do (above), whether a forward pads (an even
// router) or falls back to packed (a peaky one, whose most-loaded expert keeps more than
// the room of 1.25 times the mean, or 3 tokens, which leave experts empty): which one
// each case took is worked out from its kept counts, and both must occur.
TEST(PaddedToTheMost, GiveThePackedLayersResults) {
  struct Case {
    moe::MOEConfig config;
    std::int64_t T;
    double gate_scale;
  };
  moe::MOEConfig dropless(8, 2, 12, 16, 1.0f);
  dropless.drop_tokens = false;
  moe::MOEConfig drops(8, 2, 12, 16, 1.25f);
  moe::MOEConfig deepseek = deepseek_like();
  deepseek.drop_tokens = false;
  int padded_cases = 0, packed_cases = 0;
  for (const Case& c : {Case{dropless, 300, 0.01}, Case{dropless, 300, 2.0}, Case{drops, 77, 0.01},
                        Case{drops, 300, 2.0}, Case{deepseek, 300, 0.01}, Case{dropless, 3, 0.01}}) {
    SCOPED_TRACE(::testing::Message() << c.config.to_string() << " T=" << c.T << " gate scale " << c.gate_scale);
    auto run = [&](const char* expert_rows) {
      const ExpertRowsChoice choice(expert_rows);
      return run_layer(c.config, "steps", c.T, false, c.gate_scale);
    };
    const LayerRun packed = run("packed"), padded = run("padded");
    expect_padded_gives_packed(packed, padded);
    // Which layout this forward took: the room is 1.25 times the mean kept rows, at most
    // min(C, T), rounded up to 8 (docs/design.md §4b).
    const std::int64_t E = c.config.num_experts, k = c.config.top_k;
    const std::int64_t capacity = c.config.drop_tokens
                                      ? static_cast<std::int64_t>(std::ceil(c.config.capacity_factor * c.T * k / E))
                                      : c.T;
    const std::int64_t room = (std::min((5 * c.T * k + 4 * E - 1) / (4 * E), std::min(capacity, c.T)) + 7) / 8 * 8;
    const auto& kept = padded.forward.stats.tokens_per_expert;
    const std::int64_t most = (*std::max_element(kept.begin(), kept.end()) + 7) / 8 * 8;
    ++(most <= room && *std::min_element(kept.begin(), kept.end()) > 0 ? padded_cases : packed_cases);
  }
  EXPECT_GT(padded_cases, 0);
  EXPECT_GT(packed_cases, 0);
}

// Speculated rows (MOE_SPECULATIVE_ROWS=1; docs/design.md §4b): the padded layer queues
// its experts for rows guessed from the last forward before the kept counts arrive,
// and runs them again on the packed rows when the guess missed. Either way each
// training forward and backward computes what the packed layer computes (the same
// routing and statistics exactly; outputs and gradients to 1e-6, as padding does). A
// sequence of inputs: the first seeds the guess, and a batch seen before hits it
// (same routing, same most rows kept); a batch of one token repeated sends every token
// to the same experts, whose kept rows exceed the guess or leave experts empty (a
// miss, packed), and after it the guess is capped at the room; then 2 800 tokens,
// guessed from 3 000. With drops, dropless, and the DeepSeek-like architecture (a
// shared expert run during the wait).
TEST(SpeculatedRows, GiveThePackedLayersResultsWhetherTheGuessHoldsOrNot) {
  moe::MOEConfig dropless(8, 2, 12, 16, 1.0f);
  dropless.drop_tokens = false;
  const moe::MOEConfig drops(8, 2, 12, 16, 1.25f);
  moe::MOEConfig deepseek = deepseek_like();
  deepseek.drop_tokens = false;
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  for (const moe::MOEConfig& config : {dropless, drops, deepseek}) {
    SCOPED_TRACE(config.to_string());
    const PlanChoice steps("steps");
    auto layer_with = [&](const char* rows, const char* speculate) {
      const ExpertRowsChoice choice(rows);
      const moe::testing::ScopedEnvironment speculation("MOE_SPECULATIVE_ROWS", speculate);
      moe::LayerOptions options;
      options.aux_loss_coef = 0.01f;
      auto layer = std::make_unique<moe::MoELayer>(config, *comm, 5, options);
      // Loads near the mean, so that the padded layout pads (its room is 1.25 times it).
      layer->set_gate_weights(moe::testing::gate_of_equal_columns(config.hidden_dim, config.num_experts, 0.05, 6));
      return layer;
    };
    const auto packed = layer_with("packed", ""), speculating = layer_with("padded", "1");
    const auto x7 = moe::testing::random_tensor({3000, config.hidden_dim}, 1.0, 7);
    const auto x8 = moe::testing::random_tensor({3000, config.hidden_dim}, 1.0, 8);
    const auto x9 = moe::testing::random_tensor({2800, config.hidden_dim}, 1.0, 9);
    moe::Tensor<float> repeated({3000, config.hidden_dim});
    for (std::int64_t t = 0; t < 3000; ++t)
      std::copy(x7.begin(), x7.begin() + config.hidden_dim, repeated.begin() + t * config.hidden_dim);
    // Seed, hit, hit, miss, the room, hit, guessed from 3 000 tokens, hit.
    const std::vector<moe::Tensor<float>> inputs = {x7, x7, x7, repeated, x8, x8, x9, x9};
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "input " << i);
      const moe::Tensor<float> grad = moe::testing::random_tensor(inputs[i].shape(), 1.0, 100 + i);
      LayerRun want, got;
      for (auto [layer, run] : {std::pair{packed.get(), &want}, std::pair{speculating.get(), &got}}) {
        layer->zero_grad();
        run->forward = layer->forward(inputs[i], moe::Pass::Training);
        run->dx = layer->backward(grad);
        run->gate_grad = layer->gate_grad();
        for (std::int64_t e = 0; e < config.num_experts; ++e) run->expert_grads.push_back(layer->expert_grad(e));
        run->shared_grad = layer->shared_expert_grad();
      }
      expect_padded_gives_packed(want, got);
    }
    const auto speculation = moe::detail::LayerAccess::speculation(*speculating);
    EXPECT_GE(speculation.hits, 4);    // inputs 1, 2, 5 and 7 at least
    EXPECT_GE(speculation.misses, 1);  // input 3, the repeated token
    const auto none = moe::detail::LayerAccess::speculation(*packed);  // the packed layer never speculates
    EXPECT_EQ(none.hits + none.misses, 0);
  }
}

TEST(PaddedToTheMost, TheChoiceIsCheckedWhenTheLayerIsBuilt) {
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  const moe::MOEConfig config(4, 2, 8, 8, 1.0f);
  {
    const ExpertRowsChoice unknown("tight");
    EXPECT_MOE_ERROR(moe::MoELayer(config, *comm, 1), "MOE_EXPERT_ROWS = 'tight'", "expected packed, padded");
  }
  const ExpertRowsChoice padded("padded");
  moe::LayerOptions options;
  options.static_shapes = true;
  EXPECT_MOE_ERROR(moe::MoELayer(config, *comm, 1, options), "MOE_EXPERT_ROWS = padded with options.static_shapes");
  {
    const PlanChoice host("host");
    EXPECT_MOE_ERROR(moe::MoELayer(config, *comm, 1), "MOE_EXPERT_ROWS = padded with MOE_SINGLE_RANK_PLAN = host");
  }
  const moe::testing::ScopedEnvironment speculation("MOE_SPECULATIVE_ROWS", "yes");
  EXPECT_MOE_ERROR(moe::MoELayer(config, *comm, 1), "MOE_SPECULATIVE_ROWS = 'yes'", "expected 1");
}

// The padded layout by default only where it was measured faster (bf16 on the GPU, one
// rank, shapes not static; tests/cuda checks those): on the CPU (float32 only) the rows
// stay packed unless MOE_EXPERT_ROWS asks for padding.
TEST(PaddedToTheMost, IsTheCpusLayoutOnlyWhenAskedFor) {
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  const moe::MOEConfig config(4, 2, 8, 8, 1.0f);
  moe::MoELayer unset(config, *comm, 1);
  EXPECT_FALSE(moe::detail::LayerAccess::pads_experts(unset));
  {
    const ExpertRowsChoice padded("padded");
    moe::MoELayer asked(config, *comm, 1);
    EXPECT_TRUE(moe::detail::LayerAccess::pads_experts(asked));
  }
  const ExpertRowsChoice packed("packed");
  moe::MoELayer refused(config, *comm, 1);
  EXPECT_FALSE(moe::detail::LayerAccess::pads_experts(refused));
}

TEST(StaticShapes, NeedACapacityAndThePlanSteps) {
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::LayerOptions options;
  options.static_shapes = true;
  moe::MOEConfig dropless(4, 2, 8, 8, 1.0f);
  dropless.drop_tokens = false;
  EXPECT_MOE_ERROR(moe::MoELayer(dropless, *comm, 1, options), "options.static_shapes = true with drop_tokens = false",
                   "expected a capacity");
  const PlanChoice host("host");
  EXPECT_MOE_ERROR(moe::MoELayer(moe::MOEConfig(4, 2, 8, 8, 1.0f), *comm, 1, options),
                   "options.static_shapes = true with MOE_SINGLE_RANK_PLAN = host");
}

// forward_async (static shapes, no host results) computes forward's output bit for bit,
// with and without a shared expert, at a decode size and past a chunk; no tokens is a
// no-op.
TEST(ForwardAsync, GivesTheForwardsOutput) {
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::LayerOptions options;
  options.static_shapes = true;
  for (const moe::MOEConfig& config : {moe::MOEConfig(8, 2, 12, 16, 1.25f), deepseek_like()}) {
    moe::MoELayer layer(config, *comm, 3, options);
    layer.set_gate_weights(moe::testing::random_tensor({config.hidden_dim, config.num_experts}, 2.0, 6));
    for (const std::int64_t T : {2, 300}) {
      SCOPED_TRACE(::testing::Message() << config.to_string() << " T=" << T);
      const moe::Tensor<float> x = moe::testing::random_tensor({T, config.hidden_dim}, 1.0, 9);
      const moe::ForwardResult expected = layer.forward(x);
      std::vector<float> out(static_cast<std::size_t>(x.numel()), std::nanf(""));
      layer.forward_async(x.data(), T, out.data());
      layer.synchronize();
      EXPECT_TRUE(std::equal(out.begin(), out.end(), expected.output.begin()));
    }
    layer.forward_async(nullptr, 0, nullptr);
  }
}

moe::MOEConfig dropless(moe::MOEConfig c) {
  c.drop_tokens = false;
  return c;
}

// A dropless layer's forward_async (packed experts whose row counts stay where the
// plan is made: Ops::gather_expert_ffn_combine_resident) computes forward's output bit
// for bit: ffn and glu experts, softmax and group-limited sigmoid routing, a shared
// expert, from one token to past a chunk of the plan; forward plans on the host here,
// forward_async with the plan's steps.
TEST(ForwardAsync, DroplessGivesTheForwardsOutput) {
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::MOEConfig glu(8, 2, 16, 24, 1.0f);
  glu.expert_kind = moe::ExpertKind::GLU;
  glu.activation = moe::Activation::GELU;
  for (const moe::MOEConfig& config : {dropless(moe::MOEConfig(8, 2, 12, 16, 1.25f)), dropless(glu),
                                       dropless(deepseek_like())}) {
    moe::MoELayer layer(config, *comm, 3);
    layer.set_gate_weights(moe::testing::random_tensor({config.hidden_dim, config.num_experts}, 2.0, 6));
    for (const std::int64_t T : {1, 2, 7, 300}) {
      SCOPED_TRACE(::testing::Message() << config.to_string() << " T=" << T);
      const moe::Tensor<float> x = moe::testing::random_tensor({T, config.hidden_dim}, 1.0, 9 + T);
      const moe::ForwardResult expected = layer.forward(x);
      EXPECT_EQ(expected.stats.dropped, 0);
      std::vector<float> out(static_cast<std::size_t>(x.numel()), std::nanf(""));
      layer.forward_async(x.data(), T, out.data());
      layer.synchronize();
      EXPECT_TRUE(std::equal(out.begin(), out.end(), expected.output.begin()));
    }
  }
}

// What a decoder's CUDA graphs, one per batch size, rely on (MoELayer::capture_forward):
// once a static-shape layer has run at its largest token count, smaller counts move
// none of its buffers, whatever the routing (the ops count their frees:
// Ops::memory_epoch). On the CPU this holds the layer's own buffers and the plan's;
// CudaLayer.GraphsCapturedFromTheLargestTokenCountDownStayValid holds the CUDA ops'.
TEST(ForwardAsync, SmallerTokenCountsAfterTheLargestMoveNoBuffer) {
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::LayerOptions static_shapes;
  static_shapes.static_shapes = true;
  const moe::LayerOptions packed;
  for (const auto& [config, options] : {std::pair{moe::MOEConfig(8, 2, 12, 16, 1.25f), static_shapes},
                                        std::pair{deepseek_like(), static_shapes},
                                        std::pair{dropless(moe::MOEConfig(8, 2, 12, 16, 1.25f)), packed},
                                        std::pair{dropless(deepseek_like()), packed}}) {
    SCOPED_TRACE(::testing::Message() << config.to_string()
                                      << (options.static_shapes ? " static shapes" : " dropless"));
    moe::MoELayer layer(config, *comm, 3, options);
    layer.set_gate_weights(moe::testing::random_tensor({config.hidden_dim, config.num_experts}, 2.0, 6));
    const moe::kernels::Ops& ops = moe::detail::LayerAccess::ops(layer);
    const std::int64_t most = 3000, H = config.hidden_dim;
    const moe::Tensor<float> x = moe::testing::random_tensor({2 * most, H}, 1.0, 9);
    std::vector<float> out(static_cast<std::size_t>(x.numel()));
    layer.forward_async(x.data(), most, out.data());
    const std::uint64_t sized = ops.memory_epoch();
    for (const std::int64_t T : {most - 1, std::int64_t{1000}, std::int64_t{300}, std::int64_t{64}, std::int64_t{7},
                                 std::int64_t{1}}) {
      layer.forward_async(x.data() + (most - T) * H, T, out.data());  // other tokens, other routing
      EXPECT_EQ(ops.memory_epoch(), sized) << T << " tokens moved a buffer";
    }
    // More tokens than before do move them, and the count sees it.
    layer.forward_async(x.data(), 2 * most, out.data());
    EXPECT_GT(ops.memory_epoch(), sized);
  }
}

// The padded layout's rows follow the routing (every expert padded to the most rows
// any kept), but its buffers may not: a CUDA graph captured at a token count must stay
// valid through eager forwards and backwards at that count with other routings, as
// CudaLayer.DroplessForwardAsyncWaitsForNothingAndReplaysAsAGraph does them (it failed
// on the H200 on 2026-11-28: an eager forward with a more uneven routing moved the
// buffers the graph had recorded). So they are sized for the most rows the token count
// can give in that layout, whatever the routing. Here the layer's own buffers and the
// CPU ops' are checked (Ops::memory_epoch counts frees); that CUDA test, the CUDA ops'.
TEST(PaddedToTheMost, BuffersFollowTheTokenCountNotTheRouting) {
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  const ExpertRowsChoice padded("padded");
  for (const moe::MOEConfig& config : {dropless(moe::MOEConfig(8, 2, 12, 16, 1.25f)), dropless(deepseek_like())}) {
    SCOPED_TRACE(config.to_string());
    moe::MoELayer layer(config, *comm, 3);
    ASSERT_TRUE(moe::detail::LayerAccess::pads_experts(layer));
    layer.set_gate_weights(moe::testing::random_tensor({config.hidden_dim, config.num_experts}, 2.0, 6));
    const moe::kernels::Ops& ops = moe::detail::LayerAccess::ops(layer);
    const std::int64_t T = 300, H = config.hidden_dim, rounds = 8;
    const moe::Tensor<float> x = moe::testing::random_tensor({rounds * T, H}, 1.0, 9);
    std::vector<float> out(static_cast<std::size_t>(T * H)), d_out(out.size(), 1.0f), d_in(out.size());
    std::uint64_t sized = 0;
    for (std::int64_t round = 0; round < rounds; ++round) {  // other tokens, other routing
      const float* tokens = x.data() + round * T * H;
      layer.forward(tokens, T, out.data(), moe::Pass::Training);
      layer.backward(d_out.data(), d_in.data());
      layer.forward(tokens, T, out.data(), moe::Pass::Inference);
      layer.forward_async(tokens, T, out.data());
      layer.synchronize();
      if (round == 0) sized = ops.memory_epoch();
      EXPECT_EQ(ops.memory_epoch(), sized) << "round " << round << " moved a buffer";
    }
  }
}

TEST(ForwardAsync, NeedsStaticShapesOrNoCapacityAndCaptureNeedsAGpu) {
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  const moe::MOEConfig config(4, 2, 8, 8, 1.0f);
  std::vector<float> x(8 * 4, 0.5f), out(x.size());
  moe::MoELayer packed(config, *comm, 1);
  EXPECT_MOE_ERROR(packed.forward_async(x.data(), 4, out.data()), "MoELayer::forward_async",
                   "options.static_shapes = false with drop_tokens = true; expected static_shapes = true",
                   "or drop_tokens = false");
  moe::MoELayer without_capacity(dropless(config), *comm, 1);
  EXPECT_MOE_ERROR(without_capacity.capture_forward(x.data(), 4, out.data()), "MoELayer::capture_forward",
                   "options.device = cpu; expected cuda");
  moe::LayerOptions options;
  options.static_shapes = true;
  moe::MoELayer padded(config, *comm, 1, options);
  EXPECT_MOE_ERROR(padded.forward_async(x.data(), 4, nullptr), "input or output is null for 4 tokens");
  EXPECT_MOE_ERROR(padded.capture_forward(x.data(), 4, out.data()), "MoELayer::capture_forward",
                   "options.device = cpu; expected cuda");
  moe::ForwardGraph empty;
  EXPECT_MOE_ERROR(empty.replay(), "ForwardGraph::replay: an empty graph");
}

TEST(PlanStepsInTheLayer, AnUnknownChoiceIsAnErrorNamingIt) {
  const PlanChoice choice("gpu");
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  try {
    moe::MoELayer layer(moe::MOEConfig(4, 2, 8, 8, 1.0f), *comm, 1);
    FAIL() << "expected an error";
  } catch (const moe::Error& e) {
    EXPECT_NE(std::string(e.what()).find("MOE_SINGLE_RANK_PLAN = 'gpu'"), std::string::npos) << e.what();
  }
}

}  // namespace
