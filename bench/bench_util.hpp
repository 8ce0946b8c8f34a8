// Timing helpers for the benchmarks: medians of repeated runs, and the dense
// cblas_sgemm baseline that MoE throughput is reported against.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace moe::bench {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Runs every candidate `reps` times, interleaved (a, b, a, b, …) so that a slow spell
// of a shared machine hits all of them alike; returns each one's median seconds.
inline std::vector<double> interleaved_medians(const std::vector<std::function<void()>>& candidates,
                                               int warmup, int reps) {
  for (int w = 0; w < warmup; ++w)
    for (const auto& run : candidates) run();
  std::vector<std::vector<double>> times(candidates.size());
  for (int r = 0; r < reps; ++r)
    for (std::size_t c = 0; c < candidates.size(); ++c) {
      const auto start = std::chrono::steady_clock::now();
      candidates[c]();
      times[c].push_back(seconds_since(start));
    }
  std::vector<double> medians;
  for (auto& t : times) medians.push_back(median(t));
  return medians;
}

inline std::vector<float> random_vector(std::int64_t n, float stddev, std::uint64_t seed) {
  std::vector<float> v(static_cast<std::size_t>(n));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  for (auto& x : v) x = normal(rng);
  return v;
}

// The dense work of the same FLOPs as a MoE forward, run by OpenBLAS alone on the
// same cores: the gate GEMM [T,H]·[H,E] and the expert pair [T·k,H]·[H,G·F],
// [T·k,F]·[F,H] as single large GEMMs (G = 2 for glu experts, whose input projection
// is twice as wide), plus the shared expert's pair over the T tokens when it has a
// width.
class DenseGemmBaseline {
 public:
  DenseGemmBaseline(std::int64_t tokens, std::int64_t top_k, std::int64_t hidden,
                    std::int64_t expert, std::int64_t experts, int threads, int in_factor = 1,
                    std::int64_t shared_width = 0);
  void run();
  // run() and the backward GEMMs of the same shapes: for each of the three products
  // C = A·B, the gradients A' = C'·Bᵀ and B' = Aᵀ·C'.
  void run_training();
  double flops() const;
  double training_flops() const;

 private:
  std::int64_t T_, k_, H_, F_, E_;
  int threads_;
  int G_;
  std::int64_t S_;  // shared expert width (0: none)
  std::vector<float> shared_w1_, shared_hidden_, shared_w2_, shared_out_;
  std::vector<float> x_, gate_, logits_, rows_, w1_, hidden_, w2_, out_;
  std::vector<float> d_x_, d_gate_, d_rows_, d_w1_, d_hidden_, d_w2_;
};

}  // namespace moe::bench
