// Distributed forward benchmark (issue 3), run under moe-run: every rank routes a
// fixed number of its own tokens through the expert-parallel layer. Prints one CSV
// row (rank 0): ranks, threads per rank, tokens per rank, median ms per forward (the
// slowest rank's time of each iteration), global tokens/s, and token-row bytes sent
// per rank in both traffic modes; then where the time goes: the median ms of the
// dispatch and send-back phases (docs/design.md §2), a raw MPI_Alltoallv of the same
// row counts both ways timed in the same run (each rank's rows for itself included, as
// a layer that hands every row to MPI sends them), and raw / phases (1.0: the phases
// cost no more than MPI's own all-to-all); then the same for a raw MPI_Alltoallv of the
// rows that cross ranks only (the layer keeps its own rows in place).
//   moe-run -np 2 build/bench/moe_dist_bench --tokens 4096 [--traffic dedup|per-assignment]
// --device cuda [--precision bf16] runs the layer on the GPU (ranks may share one over
// MPI); scripts/gpu-check.sh times the distributed plan there with MOE_EXCHANGE_PLAN
// host against steps.
#include <mpi.h>
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
  bool header = false, separate_waits = false, print_phases = false;
  std::string traffic = "dedup", device = "cpu", precision = "fp32";
  app.add_option("--experts", E, "num_experts");
  app.add_option("--top-k", k, "top_k");
  app.add_option("--hidden", H, "hidden_dim");
  app.add_option("--expert-dim", F, "expert_dim");
  app.add_option("--tokens", tokens, "tokens per rank");
  app.add_option("--reps", reps, "timed forwards (the two raw exchanges take turns, so at least 2)")
      ->check(CLI::Range(2, 1000000));
  app.add_option("--traffic", traffic, "which mode is timed")->check(CLI::IsMember({"dedup", "per-assignment"}));
  app.add_option("--device", device, "where the layer computes")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--precision", precision, "the experts' GEMMs on a GPU")->check(CLI::IsMember({"fp32", "tf32", "bf16"}));
  app.add_flag("--header", header, "print the CSV header first");
  app.add_flag("--separate-waits", separate_waits, "barriers before the exchanges, timed apart (see above)");
  app.add_flag("--phases", print_phases, "after the CSV row, rank 0's mean ms per phase of the timed forwards");
  CLI11_PARSE(app, argc, argv);

  auto comm = moe::make_communicator();
  const moe::MOEConfig config(E, k, H, F);
  const moe::TrafficMode timed_mode =
      traffic == "dedup" ? moe::TrafficMode::Deduplicated : moe::TrafficMode::PerAssignment;
  // --separate-waits: barriers before the exchanges, timed apart, so the phases time the
  // exchanges, not the wait for the slowest rank's experts (which a raw all-to-all
  // after a barrier never sees). They cost a barrier each: off for the scaling figures.
  moe::LayerOptions timed_options{timed_mode};
  timed_options.separate_waits = separate_waits;
  timed_options.device = device == "cuda" ? moe::Device::CUDA : moe::Device::CPU;
  timed_options.precision = precision == "bf16"   ? moe::Precision::BF16
                            : precision == "tf32" ? moe::Precision::TF32
                                                  : moe::Precision::FP32;
  moe::MoELayer layer(config, *comm, 1, timed_options);
  // A small gate keeps routing near uniform, as a trained, load-balanced router is.
  moe::Tensor<float> gate({H, E}, moe::bench::random_vector(H * E, 0.02f, 11));
  layer.set_gate_weights(gate);
  const moe::Tensor<float> x({tokens, H}, moe::bench::random_vector(tokens * H, 1.0f, 100 + comm->rank()));

  // Bytes per mode, from one forward of each (the untimed mode on a second layer).
  moe::LayerOptions other_options = timed_options;
  other_options.traffic = timed_mode == moe::TrafficMode::Deduplicated ? moe::TrafficMode::PerAssignment
                                                                       : moe::TrafficMode::Deduplicated;
  moe::MoELayer other(config, *comm, 1, other_options);
  other.set_gate_weights(gate);
  double bytes[2] = {0, 0};  // dedup, per-assignment; mean over ranks
  const moe::ForwardStats timed_stats = layer.forward(x).stats;
  const moe::ForwardStats other_stats = other.forward(x).stats;
  bytes[timed_mode == moe::TrafficMode::Deduplicated ? 0 : 1] = double(timed_stats.bytes_sent);
  bytes[timed_mode == moe::TrafficMode::Deduplicated ? 1 : 0] = double(other_stats.bytes_sent);
  comm->all_reduce(bytes, 2, moe::DataType::Float64, moe::ReduceOp::Sum);
  double dropped = double(timed_stats.dropped);
  comm->all_reduce(&dropped, 1, moe::DataType::Float64, moe::ReduceOp::Sum);

  std::vector<double> times, exchange_times, raw_times, raw_remote_times;
  moe::PhaseTimes phase_sum;  // rank 0's, over the timed forwards
  // The same rows both ways as a bare MPI_Alltoallv (rows of H floats), on the
  // layer's own MPI communicator: what the two all-to-all phases cannot beat.
  const MPI_Comm* mpi = static_cast<const MPI_Comm*>(comm->native_handle());
  const int P = comm->size();
  const int row = static_cast<int>(H);
  std::vector<int> send_counts(P), recv_counts(P), send_offsets(P), recv_offsets(P);
  for (int p = 0, s = 0, r = 0; p < P; ++p) {
    send_counts[p] = static_cast<int>(timed_stats.rows_sent[p]) * row;
    recv_counts[p] = static_cast<int>(timed_stats.rows_received[p]) * row;
    send_offsets[p] = s, recv_offsets[p] = r;
    s += send_counts[p], r += recv_counts[p];
  }
  std::vector<float> out_rows(send_offsets[P - 1] + send_counts[P - 1], 1.0f);
  std::vector<float> in_rows(recv_offsets[P - 1] + recv_counts[P - 1], 0.0f);
  // The same without each rank's rows for itself: what crosses ranks.
  std::vector<int> remote_send_counts = send_counts, remote_recv_counts = recv_counts;
  remote_send_counts[comm->rank()] = remote_recv_counts[comm->rank()] = 0;
  auto raw_exchange = [&](const std::vector<int>& to, const std::vector<int>& from) {
    MPI_Alltoallv(out_rows.data(), to.data(), send_offsets.data(), MPI_FLOAT, in_rows.data(), from.data(),
                  recv_offsets.data(), MPI_FLOAT, *mpi);
    MPI_Alltoallv(in_rows.data(), from.data(), recv_offsets.data(), MPI_FLOAT, out_rows.data(), to.data(),
                  send_offsets.data(), MPI_FLOAT, *mpi);
  };
  auto timed_raw_exchange = [&](const std::vector<int>& to, const std::vector<int>& from) {
    comm->barrier();
    const auto start = std::chrono::steady_clock::now();
    raw_exchange(to, from);
    double seconds = moe::bench::seconds_since(start);
    comm->all_reduce(&seconds, 1, moe::DataType::Float64, moe::ReduceOp::Max);
    return seconds;
  };
  for (int r = 0; r < reps + 1; ++r) {
    comm->barrier();
    const auto start = std::chrono::steady_clock::now();
    const moe::PhaseTimes phases = layer.forward(x).stats.times;
    double t[2] = {moe::bench::seconds_since(start), phases.dispatch + phases.send_back};
    comm->all_reduce(t, 2, moe::DataType::Float64, moe::ReduceOp::Max);
    // One raw exchange per forward, the two kinds taking turns, so that each runs in the
    // state the layer's exchanges meet: right after a forward, the buffers not warm
    // from another exchange.
    const bool remote_turn = r % 2 == 1;
    const double raw = mpi ? remote_turn ? timed_raw_exchange(remote_send_counts, remote_recv_counts)
                                         : timed_raw_exchange(send_counts, recv_counts)
                           : 0.0;
    if (r == 0) continue;  // a warm-up
    times.push_back(t[0]), exchange_times.push_back(t[1]);
    (remote_turn ? raw_remote_times : raw_times).push_back(raw);
    phase_sum += phases;
  }
  const double median = moe::bench::median(times);
  const double exchange = moe::bench::median(exchange_times), raw = moe::bench::median(raw_times);
  const double raw_remote = moe::bench::median(raw_remote_times);
  if (comm->rank() == 0) {
    if (header)
      std::printf("ranks,threads,tokens_per_rank,timed_mode,ms,tokens_per_s,dedup_bytes_per_rank,"
                  "per_assignment_bytes_per_rank,dropped_share,all_to_all_phases_ms,raw_alltoallv_ms,"
                  "raw_over_phases,raw_remote_alltoallv_ms,raw_remote_over_phases\n");
    std::printf("%d,%d,%ld,%s,%.3f,%.0f,%.0f,%.0f,%.4f,%.3f,%.3f,%.3f,%.3f,%.3f\n", P, omp_get_max_threads(),
                tokens, traffic.c_str(), median * 1e3, double(P * tokens) / median, bytes[0] / P, bytes[1] / P,
                dropped / double(P * tokens * k), exchange * 1e3, raw * 1e3, exchange > 0 ? raw / exchange : 0.0,
                raw_remote * 1e3, exchange > 0 ? raw_remote / exchange : 0.0);
    const double n = reps > 0 ? reps : 1;
    if (print_phases) {
      std::printf("rank 0 ms per forward:");
      for (const moe::PhaseTimes::Field& f : moe::PhaseTimes::fields)
        std::printf(" %s %.3f", f.name, 1e3 * (phase_sum.*f.seconds) / n);
      std::printf("\n");
    }
  }
  return 0;
}
