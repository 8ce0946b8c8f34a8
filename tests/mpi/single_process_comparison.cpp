#include "single_process_comparison.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "mpi_test_env.hpp"
#include "support/random_architecture.hpp"
#include "support/test_util.hpp"

namespace moe::testing {
namespace {

template <class T>
std::vector<T> summed(std::vector<T> v, DataType type, Communicator& over = world()) {
  over.all_reduce(v.data(), std::int64_t(v.size()), type, ReduceOp::Sum);
  return v;
}

std::vector<float> values(const Tensor<float>& t) { return {t.begin(), t.end()}; }

std::vector<float> summed(const Tensor<float>& t) { return summed(values(t), DataType::Float32); }

// The normwise relative error (support/test_util.hpp); a size mismatch is infinite.
double error(const Tensor<float>& a, const std::vector<float>& b) {
  if (a.numel() != std::int64_t(b.size())) return std::numeric_limits<double>::infinity();
  return relative_error(a.data(), b.data(), a.numel());
}

}  // namespace

int sweep_draws(int draws, int ranks) { return (ranks > 2 ? draws / 3 : draws) * sweep_scale(); }

int random_expert_parallel_size(std::mt19937_64& rng, int ranks) {
  std::vector<int> divisors;
  for (int d = 1; d < ranks; ++d)
    if (ranks % d == 0) divisors.push_back(d);
  if (divisors.empty()) return 1;
  return divisors[std::uniform_int_distribution<std::size_t>(0, divisors.size() - 1)(rng)];
}

ExpertParallelGroups& ExpertGroupsBySize::of(int size) {
  auto it = groups_.find(size);
  if (it == groups_.end()) it = groups_.emplace(size, split_expert_parallel(world(), size)).first;
  return it->second;
}

MoELayer make_world_layer(const MOEConfig& config, const LayerOptions& options, ExpertParallelGroups* groups) {
  if (!groups) return MoELayer(config, world(), 5, options);
  return MoELayer(config, *groups->experts, *groups->replicas, 5, options);
}

void set_random_parameters(MoELayer& layer, std::uint64_t seed, double gate_scale) {
  const MOEConfig& c = layer.config();
  layer.set_gate_weights(random_tensor({c.hidden_dim, c.num_experts}, gate_scale, seed + 1));
  for (std::int64_t e = layer.first_local_expert(); e < layer.first_local_expert() + layer.num_local_experts(); ++e)
    layer.set_expert_params(e, random_tensor({c.expert_param_count()}, 0.4, seed + 100 + std::uint64_t(e)));
  if (c.router == RouterKind::Sigmoid) layer.set_expert_bias(random_tensor({c.num_experts}, 0.1, seed + 2));
  if (c.shared_expert_dim > 0)
    layer.set_shared_expert_params(random_tensor({c.shared_expert_param_count()}, 0.4, seed + 3));
  if (c.shared_gate) layer.set_shared_gate_weights(random_tensor({c.hidden_dim}, 0.5, seed + 4));
}

void expect_equal_to_the_single_process_layer(const MOEConfig& config, const LayerOptions& options,
                                              const Tensor<float>& x, const Tensor<float>& g,
                                              const std::function<void(MoELayer&)>& set_parameters,
                                              ExpertParallelGroups* groups) {
  MoELayer layer = make_world_layer(config, options, groups);
  set_parameters(layer);
  const ForwardResult r = layer.forward(x, Pass::Training);
  const Tensor<float> dx = layer.backward(g);

  auto local = make_communicator(CommBackend::Local);
  LayerOptions single_options = options;
  single_options.device = Device::CPU;
  MoELayer single(config, *local, 5, single_options);
  set_parameters(single);
  const ForwardResult r1 = single.forward(x, Pass::Training);
  const Tensor<float> dx1 = single.backward(g);

  // The collectives first, on every rank alike (no early return before them).
  const std::vector<std::int64_t> load = summed(r1.stats.tokens_per_expert, DataType::Int64, layer.communicator());
  const std::vector<std::int64_t> chosen = summed(r1.stats.chosen_per_expert, DataType::Int64, layer.communicator());
  const std::vector<float> gate_grad = summed(single.gate_grad());
  const std::vector<float> shared_grad = summed(single.shared_expert_grad());
  const std::vector<float> shared_gate_grad = summed(single.shared_gate_grad());
  std::vector<std::vector<float>> expert_grads;
  for (std::int64_t e = 0; e < config.num_experts; ++e) expert_grads.push_back(summed(single.expert_grad(e)));

  EXPECT_LE(error(r.output, values(r1.output)), 1e-5) << "output";
  EXPECT_EQ(std::vector<int>(r.expert_indices.begin(), r.expert_indices.end()),
            std::vector<int>(r1.expert_indices.begin(), r1.expert_indices.end()));
  EXPECT_LE(error(r.expert_weights, values(r1.expert_weights)), 1e-5) << "weights";
  EXPECT_NEAR(r.aux_loss, r1.aux_loss, 1e-5 * std::max(1.0f, r1.aux_loss));
  EXPECT_NEAR(r.z_loss, r1.z_loss, 1e-5 * std::max(1.0f, r1.z_loss));
  EXPECT_EQ(r.stats.dropped, r1.stats.dropped);
  EXPECT_EQ(r.stats.tokens_per_expert, load);
  EXPECT_EQ(r.stats.chosen_per_expert, chosen);
  EXPECT_LE(error(dx, values(dx1)), 1e-5) << "input gradient";
  EXPECT_LE(error(layer.gate_grad(), gate_grad), 1e-5) << "gate gradient";
  EXPECT_LE(error(layer.shared_expert_grad(), shared_grad), 1e-5) << "shared expert gradient";
  EXPECT_LE(error(layer.shared_gate_grad(), shared_gate_grad), 1e-5) << "shared gate gradient";
  for (std::int64_t e = layer.first_local_expert(); e < layer.first_local_expert() + layer.num_local_experts(); ++e)
    EXPECT_LE(error(layer.expert_grad(e), expert_grads[static_cast<std::size_t>(e)]), 1e-4) << "expert " << e;
}

}  // namespace moe::testing
