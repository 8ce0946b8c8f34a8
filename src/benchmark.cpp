// benchmark_moe_performance: the reference API's timing loop over its own functions.
#include <chrono>
#include <cstdio>
#include <random>

#include "moe/layer.hpp"
#include "moe/moe.hpp"

namespace moe {

BenchmarkResult benchmark_moe_performance(const MOEConfig& config, int num_runs, std::int64_t num_tokens) {
  constexpr const char* where = "benchmark_moe_performance";
  config.validate();
  MOE_CHECK_ARG(num_runs > 0, where, "num_runs = ", num_runs, "; expected > 0");
  MOE_CHECK_ARG(num_tokens > 0, where, "num_tokens = ", num_tokens, "; expected > 0");

  // Setup: random tokens and the parameters a layer built with seed 0 starts from.
  Tensor<FLOAT_TYPE> input({num_tokens, config.hidden_dim});
  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : input) v = normal(rng);
  const Tensor<FLOAT_TYPE> gate = initial_gate_weights(config, 0);
  std::vector<Tensor<FLOAT_TYPE>> experts;
  for (std::int64_t e = 0; e < config.num_experts; ++e) experts.push_back(initial_expert_params(config, 0, e));

  auto forward = [&] {
    auto [weights, indices, loss] = moe_gating_forward(input, gate, config);
    return moe_expert_computation(input, weights, indices, experts, config);
  };
  forward();  // warm-up: workspaces and threads
  const auto start = std::chrono::steady_clock::now();
  for (int run = 0; run < num_runs; ++run) forward();
  const auto end = std::chrono::steady_clock::now();

  BenchmarkResult result;
  result.num_runs = num_runs;
  result.num_tokens = num_tokens;
  result.average_ms = std::chrono::duration<double, std::milli>(end - start).count() / num_runs;
  result.tokens_per_second = double(num_tokens) / result.average_ms * 1000.0;
  std::printf("Average time per forward pass: %g ms\n", result.average_ms);
  std::printf("Throughput: %g tokens/sec\n", result.tokens_per_second);
  std::fflush(stdout);
  return result;
}

}  // namespace moe
