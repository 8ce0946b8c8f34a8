// Single-process benchmark: median ms per forward (the reference API, issue 2) or per
// forward + backward (MoELayer on one rank, issue 5), tokens/s, GFLOP/s and the ratio
// to cblas_sgemm doing the same FLOPs in the same run.
// Usage: moe_bench [--mode forward|training] [--config ref,mid,fine] [--reps N] [--csv]
#include <omp.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>
#include <sstream>

#include "bench_util.hpp"
#include "moe/layer.hpp"
#include "moe/moe.hpp"

namespace {

struct BenchConfig {
  std::string name;
  std::int64_t E, k, H, F, T;
  int reps;
};

const std::map<std::string, BenchConfig> kConfigs = {
    {"ref", {"ref", 8, 2, 512, 2048, 128, 60}},
    {"mid", {"mid", 8, 2, 1024, 4096, 4096, 7}},
    {"fine", {"fine", 64, 8, 1024, 512, 4096, 7}},
};

struct Result {
  BenchConfig config;
  double moe_s, sgemm_s, flops;
  std::int64_t dropped_share_ppm;
};

// Forward + backward of the layer on one rank, the loss's gradient fixed.
Result run_training(const BenchConfig& bc, int reps_override, int threads) {
  const moe::MOEConfig config(bc.E, bc.k, bc.H, bc.F);
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::LayerOptions options;
  options.z_loss_coef = 1e-3f;
  moe::MoELayer layer(config, *comm, 1, options);
  layer.set_gate_weights(moe::Tensor<float>({bc.H, bc.E}, moe::bench::random_vector(bc.H * bc.E, 0.02f, 11)));
  const moe::Tensor<float> x({bc.T, bc.H}, moe::bench::random_vector(bc.T * bc.H, 1.0f, 10));
  const moe::Tensor<float> grad({bc.T, bc.H}, moe::bench::random_vector(bc.T * bc.H, 1e-3f, 12));
  auto step = [&] {
    layer.forward(x, moe::Pass::Training);
    layer.backward(grad);
  };
  moe::bench::DenseGemmBaseline baseline(bc.T, bc.k, bc.H, bc.F, bc.E, threads);
  const int reps = reps_override > 0 ? reps_override : bc.reps;
  const auto medians = moe::bench::interleaved_medians({step, [&] { baseline.run_training(); }}, 2, reps);
  return {bc, medians[0], medians[1], baseline.training_flops(), 0};
}

Result run(const BenchConfig& bc, int reps_override, int threads) {
  const moe::MOEConfig config(bc.E, bc.k, bc.H, bc.F);
  moe::Tensor<float> x({bc.T, bc.H}, moe::bench::random_vector(bc.T * bc.H, 1.0f, 10));
  // A small gate keeps routing near uniform, as a trained, load-balanced router is.
  moe::Tensor<float> gate({bc.H, bc.E}, moe::bench::random_vector(bc.H * bc.E, 0.02f, 11));
  std::vector<moe::Tensor<float>> experts;
  for (std::int64_t e = 0; e < bc.E; ++e)
    experts.emplace_back(std::vector<std::int64_t>{config.expert_param_count()},
                         moe::bench::random_vector(config.expert_param_count(), 0.02f, 100 + e));

  std::int64_t kept = 0;
  auto forward = [&] {
    auto [weights, indices, loss] = moe::moe_gating_forward(x, gate, config);
    moe::Tensor<float> out = moe::moe_expert_computation(x, weights, indices, experts, config);
    kept = out.numel();
  };
  moe::bench::DenseGemmBaseline baseline(bc.T, bc.k, bc.H, bc.F, bc.E, threads);
  const int reps = reps_override > 0 ? reps_override : bc.reps;
  const auto medians = moe::bench::interleaved_medians({forward, [&] { baseline.run(); }}, 2, reps);
  (void)kept;
  return {bc, medians[0], medians[1], baseline.flops(), 0};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moe forward benchmark against cblas_sgemm of the same FLOPs"};
  std::string configs = "ref,mid,fine";
  int reps = 0;
  bool csv = false;
  std::string mode = "forward";
  app.add_option("--mode", mode, "forward (reference API) or training (MoELayer forward + backward)")
      ->check(CLI::IsMember({"forward", "training"}));
  app.add_option("--config", configs, "comma-separated: ref, mid, fine");
  app.add_option("--reps", reps, "timed repetitions per candidate (default per config)");
  app.add_flag("--csv", csv, "print CSV rows instead of a table");
  CLI11_PARSE(app, argc, argv);

  const int threads = omp_get_max_threads();
  std::vector<Result> results;
  std::stringstream list(configs);
  for (std::string name; std::getline(list, name, ',');) {
    const auto it = kConfigs.find(name);
    if (it == kConfigs.end()) {
      std::fprintf(stderr, "moe_bench: --config %s is not one of ref, mid, fine\n", name.c_str());
      return 2;
    }
    results.push_back(mode == "training" ? run_training(it->second, reps, threads) : run(it->second, reps, threads));
  }

  if (csv) {
    std::printf("config,E,k,H,F,T,threads,moe_ms,sgemm_ms,gflops,ratio,mode\n");
    for (const auto& r : results)
      std::printf("%s,%ld,%ld,%ld,%ld,%ld,%d,%.3f,%.3f,%.1f,%.3f,%s\n", r.config.name.c_str(), r.config.E,
                  r.config.k, r.config.H, r.config.F, r.config.T, threads, r.moe_s * 1e3, r.sgemm_s * 1e3,
                  r.flops / r.moe_s / 1e9, r.sgemm_s / r.moe_s, mode.c_str());
    return 0;
  }
  std::printf("moe %s vs cblas_sgemm of the same FLOPs, %d thread(s)\n",
              mode == "training" ? "forward + backward (MoELayer, 1 rank)" : "forward (reference API)", threads);
  std::printf("%-5s %3s %2s %5s %5s %5s | %9s %11s %8s | %9s %8s | %6s\n", "cfg", "E", "k", "H", "F", "T",
              "moe ms", "tokens/s", "GFLOP/s", "sgemm ms", "GFLOP/s", "ratio");
  for (const auto& r : results) {
    const auto& c = r.config;
    std::printf("%-5s %3ld %2ld %5ld %5ld %5ld | %9.2f %11.0f %8.1f | %9.2f %8.1f | %6.3f\n", c.name.c_str(),
                c.E, c.k, c.H, c.F, c.T, r.moe_s * 1e3, double(c.T) / r.moe_s, r.flops / r.moe_s / 1e9,
                r.sgemm_s * 1e3, r.flops / r.sgemm_s / 1e9, r.sgemm_s / r.moe_s);
  }
  std::printf("ratio = sgemm time / moe time (1.0 = the MoE layer runs at dense-GEMM speed)\n");
  return 0;
}
