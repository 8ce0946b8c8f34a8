// Expert parallelism for the architectures of docs/design.md §1b: on every rank the
// P-rank layer's output and input gradient equal the single-process layer's on that
// rank's tokens; the replicated tensors' gradients (gate, shared expert, shared gate)
// equal the single-process gradients summed over ranks; each expert's gradient equals
// the single-process gradient of the summed loss (single_process_comparison.hpp has the
// tolerances). And the expert-bias update gives the same bias on every rank, equal to
// the single-process update over every rank's tokens, bit for bit.
#include <cmath>

#include "moe/layer.hpp"
#include "mpi_test_env.hpp"
#include "single_process_comparison.hpp"
#include "support/test_util.hpp"

using moe::MOEConfig;
using moe::Tensor;
using moe::testing::world;

namespace {

struct Scenario {
  const char* name;
  MOEConfig (*config)(int ranks);
  moe::TrafficMode traffic;
};

MOEConfig glu_shared_sigmoid(int P) {
  MOEConfig c(4 * P, 2, 12, 10, 1.0f);
  c.expert_kind = moe::ExpertKind::GLU;
  c.expert_bias = false;
  c.activation = moe::Activation::SiLU;
  c.router = moe::RouterKind::Sigmoid;
  c.routed_scaling_factor = 2.5f;
  c.shared_expert_dim = 8;
  c.shared_gate = true;
  return c;
}

// DeepSeek-V3's device-limited routing: one group per rank, each token on at most
// two ranks' experts.
MOEConfig groups_per_rank(int P) {
  MOEConfig c(4 * P, 3, 12, 10, 1.25f);
  c.expert_kind = moe::ExpertKind::GLU;
  c.router = moe::RouterKind::Sigmoid;
  c.n_group = P;
  c.topk_group = std::min(P, 2);
  c.shared_expert_dim = 6;
  return c;
}

MOEConfig ffn_groups_softmax(int P) {
  MOEConfig c(2 * P, 2, 12, 10, 1.0f);
  c.n_group = P;
  c.topk_group = 1;
  c.activation = moe::Activation::GELUTanh;
  return c;
}

const Scenario kScenarios[] = {
    {"glu_shared_sigmoid_dedup", glu_shared_sigmoid, moe::TrafficMode::Deduplicated},
    {"glu_shared_sigmoid_per_assignment", glu_shared_sigmoid, moe::TrafficMode::PerAssignment},
    {"groups_per_rank", groups_per_rank, moe::TrafficMode::Deduplicated},
    {"ffn_groups_softmax", ffn_groups_softmax, moe::TrafficMode::PerAssignment},
};

void PrintTo(const Scenario& s, std::ostream* os) { *os << s.name; }

class ArchitectureInvariance : public moe::testing::MpiTest, public ::testing::WithParamInterface<Scenario> {};

// The same random parameters on every rank (seeded alike) for both layers.
void randomise(moe::MoELayer& layer) {
  const MOEConfig& c = layer.config();
  layer.set_gate_weights(moe::testing::random_tensor({c.hidden_dim, c.num_experts}, 0.8, 5));
  if (c.router == moe::RouterKind::Sigmoid) layer.set_expert_bias(moe::testing::random_tensor({c.num_experts}, 0.1, 6));
  if (c.shared_expert_dim > 0)
    layer.set_shared_expert_params(moe::testing::random_tensor({c.shared_expert_param_count()}, 0.3, 7));
  if (c.shared_gate) layer.set_shared_gate_weights(moe::testing::random_tensor({c.hidden_dim}, 0.5, 8));
}

TEST_P(ArchitectureInvariance, ForwardAndGradientsEqualTheSingleProcessLayer) {
  const Scenario s = GetParam();
  const int P = world().size(), rank = world().rank();
  const MOEConfig config = s.config(P);
  moe::LayerOptions options = moe::testing::layer_options();
  options.traffic = s.traffic;
  options.aux_loss_coef = 0.05f;
  const std::int64_t T = moe::testing::uneven_tokens(rank, 15, 9);
  const Tensor<float> x = moe::testing::random_tensor({T, config.hidden_dim}, 1.0, 300 + rank);
  const Tensor<float> g = moe::testing::random_tensor({T, config.hidden_dim}, 1.0, 400 + rank);

  moe::testing::expect_equal_to_the_single_process_layer(config, options, x, g, randomise);
}

INSTANTIATE_TEST_SUITE_P(Scenarios, ArchitectureInvariance, ::testing::ValuesIn(kScenarios),
                         [](const auto& info) { return std::string(info.param.name); });

class ExpertBiasUpdate : public moe::testing::MpiTest {};

TEST_F(ExpertBiasUpdate, SameOnEveryRankAndAtAnyP) {
  const int P = world().size(), rank = world().rank();
  MOEConfig config = glu_shared_sigmoid(1);
  config.num_experts = moe::testing::experts_shared_by(P);  // the single-process layer is the same model
  config.bias_update_rate = 0.01f;
  moe::MoELayer layer(config, world(), 3, moe::testing::layer_options());
  auto local = moe::make_communicator(moe::CommBackend::Local);
  moe::MoELayer single(config, *local, 3);
  auto tokens = [&](int r, int round) {
    return moe::testing::random_tensor({moe::testing::uneven_tokens(r, 20, 7), config.hidden_dim}, 1.0,
                                       1000 * round + r);
  };
  for (int round = 0; round < 4; ++round) {  // the bias moves the routing between rounds
    layer.forward(tokens(rank, round), moe::Pass::Training);
    for (int r = 0; r < P; ++r) single.forward(tokens(r, round), moe::Pass::Training);
    layer.update_expert_bias();
    single.update_expert_bias();
  }
  const Tensor<float> bias = layer.expert_bias(), expected = single.expert_bias();
  std::vector<float> low(bias.begin(), bias.end()), high = low;
  const auto experts = static_cast<std::int64_t>(low.size());
  world().all_reduce(low.data(), experts, moe::DataType::Float32, moe::ReduceOp::Min);
  world().all_reduce(high.data(), experts, moe::DataType::Float32, moe::ReduceOp::Max);
  EXPECT_EQ(low, high) << "the bias differs between ranks";
  EXPECT_EQ(std::vector<float>(bias.begin(), bias.end()), std::vector<float>(expected.begin(), expected.end()));
  double moved = 0;
  for (float b : bias) moved += std::abs(b);
  EXPECT_GT(moved, 0.0) << "meant to move the bias";
}

}  // namespace
