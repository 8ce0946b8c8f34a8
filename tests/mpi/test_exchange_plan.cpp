// The distributed plan made where the routing lives (MOE_EXCHANGE_PLAN=steps: the
// plan steps of kernels/exchange_plan_steps.hpp, Ops::plan_send and plan_received, as
// a GPU runs them) against the host plan (MOE_EXCHANGE_PLAN=host): the same layer's
// output, statistics, input gradient and every parameter gradient, bit for bit, with
// drops, uneven and empty ranks, in both traffic modes. At one rank there is no
// exchange and the test checks the single-rank path is untouched by the variable.
#include <cstdlib>
#include <cstring>

#include "moe/layer.hpp"
#include "mpi_test_env.hpp"
#include "support/test_util.hpp"

using moe::MOEConfig;
using moe::Tensor;
using moe::TrafficMode;
using moe::testing::world;

namespace {

// Sets MOE_EXCHANGE_PLAN for the scope of the object (a layer reads it when built).
struct PlanChoice : moe::testing::ScopedEnvironment {
  explicit PlanChoice(const char* value) : ScopedEnvironment("MOE_EXCHANGE_PLAN", value) {}
};

moe::MoELayer layer_with_plan(const char* choice, const MOEConfig& config, const moe::LayerOptions& options) {
  const PlanChoice scoped(choice);
  return moe::MoELayer(config, world(), 11, options);
}

bool same_bits(const Tensor<float>& a, const Tensor<float>& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(float) * a.numel()) == 0;
}

struct Case {
  const char* name;
  bool drop;
  TrafficMode traffic;
  std::int64_t top_k;
  std::int64_t (*tokens)(int rank, int ranks);
};
std::int64_t uneven(int rank, int) { return moe::testing::uneven_tokens(rank, 40, 13); }
std::int64_t last_rank_empty(int rank, int ranks) { return moe::testing::none_on_last_rank(rank, ranks, 300); }

const Case kCases[] = {
    {"drop_dedup", true, TrafficMode::Deduplicated, 3, uneven},
    {"drop_per_assignment", true, TrafficMode::PerAssignment, 3, uneven},
    {"dropless_dedup_last_rank_empty", false, TrafficMode::Deduplicated, 2, last_rank_empty},
    {"top1_per_assignment_many_chunks", true, TrafficMode::PerAssignment, 1, last_rank_empty},
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class ExchangePlan : public moe::testing::MpiTest, public ::testing::WithParamInterface<Case> {};

TEST_P(ExchangePlan, StepsGiveTheHostPlansBits) {
  const Case c = GetParam();
  const int P = world().size(), rank = world().rank();
  MOEConfig config(4 * P, c.top_k, 16, 24, 1.0f);
  config.drop_tokens = c.drop;
  config.activation = moe::Activation::SiLU;
  moe::LayerOptions options = moe::testing::layer_options();
  options.traffic = c.traffic;
  options.aux_loss_coef = 0.01f;
  const std::int64_t T = c.tokens(rank, P);
  const Tensor<float> x = moe::testing::random_tensor({T, 16}, 1.0, 70 + rank);
  const Tensor<float> g = moe::testing::random_tensor({T, 16}, 1.0, 80 + rank);

  moe::MoELayer host = layer_with_plan("host", config, options);
  moe::MoELayer steps = layer_with_plan("steps", config, options);
  for (int call = 0; call < 2; ++call) {  // the second call reuses the first's buffers
    const moe::ForwardResult a = host.forward(x, moe::Pass::Training);
    const moe::ForwardResult b = steps.forward(x, moe::Pass::Training);
    EXPECT_TRUE(same_bits(a.output, b.output)) << "output, call " << call;
    EXPECT_EQ(a.stats.dropped, b.stats.dropped);
    EXPECT_EQ(a.stats.rows_sent, b.stats.rows_sent);
    EXPECT_EQ(a.stats.rows_received, b.stats.rows_received);
    EXPECT_EQ(a.stats.bytes_sent, b.stats.bytes_sent);
    EXPECT_EQ(a.stats.metadata_bytes_sent, b.stats.metadata_bytes_sent);
    EXPECT_EQ(a.stats.tokens_per_expert, b.stats.tokens_per_expert);
    if (c.drop && P > 1) EXPECT_GT(a.stats.dropped + (T == 0 ? 1 : 0), 0) << "the case should drop some";
    EXPECT_TRUE(same_bits(host.backward(g), steps.backward(g))) << "input gradient, call " << call;
  }
  EXPECT_TRUE(same_bits(host.gate_grad(), steps.gate_grad())) << "gate gradient";
  for (std::int64_t e = host.first_local_expert(); e < host.first_local_expert() + host.num_local_experts(); ++e)
    EXPECT_TRUE(same_bits(host.expert_grad(e), steps.expert_grad(e))) << "expert " << e;
}

INSTANTIATE_TEST_SUITE_P(Cases, ExchangePlan, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

class ExchangePlanChoice : public moe::testing::MpiTest {};

TEST_F(ExchangePlanChoice, AnUnknownValueIsAnErrorOnEveryRank) {
  const PlanChoice scoped("gpu");
  try {
    moe::MoELayer layer(MOEConfig(2 * world().size(), 1, 8, 8, 1.0f), world(), 1, moe::testing::layer_options());
    ADD_FAILURE() << "no error for MOE_EXCHANGE_PLAN = gpu";
  } catch (const moe::Error& e) {
    EXPECT_NE(std::string(e.what()).find("MOE_EXCHANGE_PLAN = 'gpu'"), std::string::npos) << e.what();
  }
}

}  // namespace
