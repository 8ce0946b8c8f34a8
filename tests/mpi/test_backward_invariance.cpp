// Training invariance (docs/design.md §2): with P ranks, every rank's input gradient equals
// the single-process gradient on its tokens; the gate gradient equals the sum over
// ranks of the single-process gate gradients; each expert's gradient equals the
// single-process gradient of the summed loss; and the global gradient norm used for
// clipping equals the single-process norm of those summed gradients. Relative error
// ≤ 1e-5 per tensor.
#include <cmath>

#include "moe/layer.hpp"
#include "moe/optimizer.hpp"
#include "mpi_test_env.hpp"
#include "support/test_util.hpp"

using moe::MOEConfig;
using moe::Tensor;
using moe::TrafficMode;
using moe::testing::world;

namespace {

struct Scenario {
  const char* name;
  std::int64_t experts_per_rank, top_k;
  bool drop;
  std::int64_t (*tokens)(int rank, int ranks);
  TrafficMode traffic;
};

std::int64_t uneven(int rank, int) { return moe::testing::uneven_tokens(rank, 15, 9); }
std::int64_t last_rank_empty(int rank, int ranks) { return moe::testing::none_on_last_rank(rank, ranks, 21); }

const Scenario kScenarios[] = {
    {"drop_uneven_dedup", 4, 2, true, uneven, TrafficMode::Deduplicated},
    {"dropless_uneven_per_assignment", 4, 2, false, uneven, TrafficMode::PerAssignment},
    {"last_rank_empty", 4, 2, true, last_rank_empty, TrafficMode::Deduplicated},
    {"top1_two_per_rank", 2, 1, true, uneven, TrafficMode::Deduplicated},
    {"eight_per_rank_top4", 8, 4, true, uneven, TrafficMode::PerAssignment},
};

void PrintTo(const Scenario& s, std::ostream* os) { *os << s.name; }

class BackwardInvariance : public moe::testing::MpiTest, public ::testing::WithParamInterface<Scenario> {};

double norm_rel(const std::vector<float>& a, const std::vector<float>& b) {
  return moe::testing::relative_error(a.data(), b.data(), std::int64_t(a.size()));
}

TEST_P(BackwardInvariance, GradientsEqualTheSingleProcessOnes) {
  const Scenario s = GetParam();
  const int P = world().size(), rank = world().rank();
  MOEConfig config(s.experts_per_rank * std::max(P, 1), s.top_k, 12, 20, 1.0f);
  if (config.num_experts < 2) config.num_experts = 2;
  config.drop_tokens = s.drop;
  config.activation = moe::Activation::GELU;
  moe::LayerOptions options = moe::testing::layer_options();
  options.traffic = s.traffic;
  options.aux_loss_coef = 0.05f;
  options.z_loss_coef = 0.01f;
  const std::int64_t T = s.tokens(rank, P);
  const Tensor<float> x = moe::testing::random_tensor({T, 12}, 1.0, 300 + rank);
  const Tensor<float> c = moe::testing::random_tensor({T, 12}, 1.0, 400 + rank);
  const Tensor<float> gate = moe::testing::random_tensor({12, config.num_experts}, 0.8, 5);

  moe::MoELayer layer(config, world(), 8, options);
  layer.set_gate_weights(gate);
  layer.forward(x, moe::Pass::Training);
  const Tensor<float> dx = layer.backward(c);
  const double norm = moe::clip_grad_norm(layer, 0.0);

  auto local = moe::make_communicator(moe::CommBackend::Local);
  moe::LayerOptions cpu_options = options;
  cpu_options.device = moe::Device::CPU;  // the reference is the single-process CPU layer
  moe::MoELayer single(config, *local, 8, cpu_options);
  single.set_gate_weights(gate);
  single.forward(x, moe::Pass::Training);
  const Tensor<float> dx_single = single.backward(c);

  // The single-process gradients of every rank's loss, summed over ranks.
  const std::int64_t n = config.expert_param_count();
  const Tensor<float> single_gate = single.gate_grad();
  std::vector<float> summed_gate(single_gate.begin(), single_gate.end());
  std::vector<float> summed_experts;
  for (std::int64_t e = 0; e < config.num_experts; ++e) {
    const Tensor<float> g = single.expert_grad(e);
    summed_experts.insert(summed_experts.end(), g.begin(), g.end());
  }
  world().all_reduce(summed_gate.data(), std::int64_t(summed_gate.size()), moe::DataType::Float32, moe::ReduceOp::Sum);
  world().all_reduce(summed_experts.data(), std::int64_t(summed_experts.size()), moe::DataType::Float32,
                     moe::ReduceOp::Sum);

  EXPECT_LE(moe::testing::relative_error(dx.data(), dx_single.data(), dx.numel()), 1e-5) << "input gradient";
  const Tensor<float> g = layer.gate_grad();
  EXPECT_LE(norm_rel({g.begin(), g.end()}, summed_gate), 1e-5) << "gate gradient";
  for (std::int64_t e = layer.first_local_expert(); e < layer.first_local_expert() + layer.num_local_experts(); ++e) {
    const Tensor<float> mine = layer.expert_grad(e);
    const std::vector<float> expected(summed_experts.begin() + e * n, summed_experts.begin() + (e + 1) * n);
    EXPECT_LE(norm_rel({mine.begin(), mine.end()}, expected), 1e-5) << "expert " << e;
  }
  double expected_norm = 0;
  for (float v : summed_gate) expected_norm += double(v) * v;
  for (float v : summed_experts) expected_norm += double(v) * v;
  expected_norm = std::sqrt(expected_norm);
  EXPECT_NEAR(norm, expected_norm, 1e-5 * expected_norm) << "global gradient norm";
}

INSTANTIATE_TEST_SUITE_P(Scenarios, BackwardInvariance, ::testing::ValuesIn(kScenarios),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
