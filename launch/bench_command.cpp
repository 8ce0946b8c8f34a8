// moe bench: the reference API's benchmark_moe_performance from the command line, or
// with --layer the expert-parallel MoELayer at the job's P ranks, with the time of each
// phase (docs/design.md §2) so that the all-to-all's share is visible.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "collective_check.hpp"
#include "launch/command.hpp"
#include "moe/moe.hpp"

namespace moe::cli {
namespace {

class BenchCommand final : public Command {
 public:
  BenchCommand() : config_options_(MOEConfig()) {}

  CLI::App* add_to(CLI::App& app) override {
    CLI::App* cmd = app.add_subcommand(
        "bench", "time forwards: the reference API's benchmark_moe_performance, or --layer at P ranks");
    config_options_.add_to(cmd);
    cmd->add_option("--runs", runs_, "timed forwards (after one warm-up)")->capture_default_str()->check(positive());
    cmd->add_option("--tokens", tokens_, "tokens per forward (per rank with --layer)")
        ->capture_default_str()
        ->check(positive());
    CLI::Option* layer =
        cmd->add_flag("--layer", layer_, "time MoELayer across the job's ranks instead of the reference API");
    cmd->add_flag("--separate-waits", separate_waits_,
                  "with --layer: a barrier before each exchange, timed apart, so dispatch and send_back time the "
                  "exchange alone");
    add_device_options(cmd, device_);
    groups_.add_to(cmd)->needs(layer);
    return cmd;
  }
  bool collective() const override { return true; }

  int run(Communicator& comm) override {
    const MOEConfig config = config_options_.config();
    if (!layer_) {
      // The reference API is single-process: rank 0 runs it while the others wait, and
      // an error there (a bad config) ends every rank with its message.
      collective_check(comm, [&] {
        if (comm.rank() == 0) benchmark_moe_performance(config, static_cast<int>(runs_), tokens_);
      });
      return 0;
    }
    LayerOptions options;
    options.separate_waits = separate_waits_;
    apply_device_options(device_, options);
    groups_.split(comm);
    MoELayer layer = groups_.make_layer(config, comm, 1, options);
    // A small gate keeps routing near uniform, as a trained, load-balanced router is.
    Tensor<FLOAT_TYPE> gate({config.hidden_dim, config.num_experts});
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (float& v : gate) v = 0.02f * normal(rng);
    layer.set_gate_weights(gate);
    Tensor<FLOAT_TYPE> x({tokens_, config.hidden_dim});
    rng.seed(100 + static_cast<unsigned>(comm.rank()));
    for (float& v : x) v = normal(rng);

    layer.forward(x);  // warm-up
    PhaseTimes sum;
    double seconds = 0;
    for (std::int64_t run = 0; run < runs_; ++run) {
      comm.barrier();
      const auto start = std::chrono::steady_clock::now();
      sum += layer.forward(x).stats.times;
      double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      comm.all_reduce(&elapsed, 1, DataType::Float64, ReduceOp::Max);  // the slowest rank's
      seconds += elapsed;
    }
    if (comm.rank() == 0) {
      const double ms = 1e3 * seconds / double(runs_);
      const double n = double(runs_);
      std::printf("moe bench --layer: %s on %d rank(s)%s (%s), %lld tokens per rank\n", config.to_string().c_str(),
                  comm.size(), groups_.describe().c_str(), device_.device.c_str(), static_cast<long long>(tokens_));
      std::printf("Average time per forward pass: %g ms\n", ms);
      std::printf("Throughput: %g tokens/sec\n", double(tokens_) * comm.size() / ms * 1000.0);
      std::printf("rank 0 phases, ms per forward:");
      for (const PhaseTimes::Field& f : PhaseTimes::fields) std::printf(" %s %.3f", f.name, 1e3 * (sum.*f.seconds) / n);
      std::printf("\n");
    }
    return 0;
  }

 private:
  ConfigOptions config_options_;
  DeviceOptions device_;
  ExpertGroupOption groups_;
  std::int64_t runs_ = 100, tokens_ = 64;
  bool layer_ = false, separate_waits_ = false;
};

}  // namespace

std::unique_ptr<Command> make_bench_command() { return std::make_unique<BenchCommand>(); }

}  // namespace moe::cli
