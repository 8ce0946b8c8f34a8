// Distributed forward benchmark (issue 3), run under moe-run: every rank routes a
// fixed number of its own tokens through the expert-parallel layer. Prints one CSV
// row (rank 0): ranks, threads per rank, tokens per rank, median ms per forward (the
// slowest rank's time of each iteration), global tokens/s, and token-row bytes sent
// per rank in both traffic modes.
//   moe-run -np 2 build/bench/moe_dist_bench --tokens 4096 [--traffic dedup|per-assignment]
#include <omp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>

#include "bench_util.hpp"
#include "moe/layer.hpp"

int main(int argc, char** argv) {
  CLI::App app{"moe expert-parallel forward benchmark (run it under moe-run)"};
  std::int64_t E = 8, k = 2, H = 1024, F = 4096, tokens = 4096;
  int reps = 7;
  bool header = false;
  std::string traffic = "dedup";
  app.add_option("--experts", E, "num_experts");
  app.add_option("--top-k", k, "top_k");
  app.add_option("--hidden", H, "hidden_dim");
  app.add_option("--expert-dim", F, "expert_dim");
  app.add_option("--tokens", tokens, "tokens per rank");
  app.add_option("--reps", reps, "timed forwards");
  app.add_option("--traffic", traffic, "which mode is timed")->check(CLI::IsMember({"dedup", "per-assignment"}));
  app.add_flag("--header", header, "print the CSV header first");
  CLI11_PARSE(app, argc, argv);

  auto comm = moe::make_communicator();
  const moe::MOEConfig config(E, k, H, F);
  const moe::TrafficMode timed_mode =
      traffic == "dedup" ? moe::TrafficMode::Deduplicated : moe::TrafficMode::PerAssignment;
  moe::MoELayer layer(config, *comm, 1, {timed_mode});
  // A small gate keeps routing near uniform, as a trained, load-balanced router is.
  moe::Tensor<float> gate({H, E}, moe::bench::random_vector(H * E, 0.02f, 11));
  layer.set_gate_weights(gate);
  const moe::Tensor<float> x({tokens, H}, moe::bench::random_vector(tokens * H, 1.0f, 100 + comm->rank()));

  // Bytes per mode, from one forward of each (the untimed mode on a second layer).
  moe::MoELayer other(config, *comm, 1,
                      {timed_mode == moe::TrafficMode::Deduplicated ? moe::TrafficMode::PerAssignment
                                                                    : moe::TrafficMode::Deduplicated});
  other.set_gate_weights(gate);
  double bytes[2] = {0, 0};  // dedup, per-assignment; mean over ranks
  const moe::ForwardStats timed_stats = layer.forward(x).stats;
  const moe::ForwardStats other_stats = other.forward(x).stats;
  bytes[timed_mode == moe::TrafficMode::Deduplicated ? 0 : 1] = double(timed_stats.bytes_sent);
  bytes[timed_mode == moe::TrafficMode::Deduplicated ? 1 : 0] = double(other_stats.bytes_sent);
  comm->all_reduce(bytes, 2, moe::DataType::Float64, moe::ReduceOp::Sum);
  double dropped = double(timed_stats.dropped);
  comm->all_reduce(&dropped, 1, moe::DataType::Float64, moe::ReduceOp::Sum);

  std::vector<double> times;
  for (int r = 0; r < reps + 1; ++r) {
    comm->barrier();
    const auto start = std::chrono::steady_clock::now();
    layer.forward(x);
    double t = moe::bench::seconds_since(start);
    comm->all_reduce(&t, 1, moe::DataType::Float64, moe::ReduceOp::Max);
    if (r > 0) times.push_back(t);  // the first is a warm-up
  }
  const double median = moe::bench::median(times);
  const int P = comm->size();
  if (comm->rank() == 0) {
    if (header)
      std::printf("ranks,threads,tokens_per_rank,timed_mode,ms,tokens_per_s,dedup_bytes_per_rank,"
                  "per_assignment_bytes_per_rank,dropped_share\n");
    std::printf("%d,%d,%ld,%s,%.3f,%.0f,%.0f,%.0f,%.4f\n", P, omp_get_max_threads(), tokens, traffic.c_str(),
                median * 1e3, double(P * tokens) / median, bytes[0] / P, bytes[1] / P,
                dropped / double(P * tokens * k));
  }
  return 0;
}
