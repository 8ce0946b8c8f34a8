// Ways to run one stage of the experts' products, timed in one run (issue 11): every
// expert's [rows_e, K]·[K, N] in bf16 with float32 accumulation and bf16 results, as the
// layer's bf16 forward runs them. On an H200 each of a fine-grained layer's 128 expert
// products ran at about 380 TFLOP/s (15.6 µs each), where cuBLAS's dense product of the
// same FLOPs ran at about 620, and four streams gained 2–3%: the experts' products,
// not the element-wise passes, are most of what stands between the layer and dense.
// This measures the alternatives side by side, before the layer is changed for one.
//
// Rows per expert: T tokens each choosing k distinct experts uniformly at random
// (dropless), from a fixed seed. The stages: "in" (K = H, N = F, or 2F for glu) and
// "out" (K = F, N = H).
//
// Methods (each timed as one stage, median of --reps, after three warm-ups):
//   dense              one cublasGemmEx over every row: the same FLOPs, one product
//   per_group_1        the layer's grouped_gemm, a cublasGemmEx per expert, one stream
//   per_group_4        the same on four streams (the layer's default)
//   per_group_4_share  four streams, each handle planning for a quarter of the SMs
//   one_launch         the layer's grouped_gemm as one cublasGemmGroupedBatchedEx
//   batched_max        cublasGemmBatchedEx, every expert padded to the most rows
//   strided_max        cublasGemmStridedBatchedEx, the same padding at fixed strides
// The padded methods do (E · max rows) / (T · k) times the FLOPs; their TFLOP/s count
// only the useful ones, so every method's figure is comparable.
//
// Prints CSV: config,kind,E,k,H,F,T,stage,K,N,method,rows_min,rows_mean,rows_max,ms,TFLOPs,dense_over_method
// (bench/torch_gpu_moe.py --mode gemms times torch._grouped_mm on the same stages).
//   gemm_methods [--config mid|mixtral|fine|deepseek] [--experts --top-k --hidden --expert-dim --tokens]
//                [--kind ffn|glu] [--reps N] [--header]
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "gpu_bench_common.cuh"
#include "kernels/cuda/gemm.cuh"

namespace {

using moe::kernels::GemmPrecision;
using moe::kernels::cuda::GemmLanes;
using moe::kernels::cuda::GroupedOperands;

// Rows per expert of a dropless routing: each token picks k distinct experts at random.
std::vector<int> routed_rows(std::int64_t E, std::int64_t k, std::int64_t T) {
  std::mt19937_64 random(2026);
  std::vector<int> rows(static_cast<std::size_t>(E), 0), experts(static_cast<std::size_t>(E));
  std::iota(experts.begin(), experts.end(), 0);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t j = 0; j < k; ++j) {  // a partial Fisher-Yates shuffle: k distinct
      std::uniform_int_distribution<std::int64_t> pick(j, E - 1);
      std::swap(experts[static_cast<std::size_t>(j)], experts[static_cast<std::size_t>(pick(random))]);
      ++rows[static_cast<std::size_t>(experts[static_cast<std::size_t>(j)])];
    }
  return rows;
}

// The device memory of one stage: packed rows (the layer's layout), the same rows
// padded to the most rows per expert, and every expert's B at a fixed stride.
class Stage {
 public:
  Stage(const std::vector<int>& rows, std::int64_t K, std::int64_t N) : rows_(rows), K_(K), N_(N) {
    total_ = std::accumulate(rows.begin(), rows.end(), std::int64_t{0});
    max_rows_ = *std::max_element(rows.begin(), rows.end());
    const std::int64_t E = static_cast<std::int64_t>(rows.size());
    a_ = device_alloc_bf16(static_cast<std::size_t>(total_ * K));
    c_ = device_alloc_bf16(static_cast<std::size_t>(total_ * N));
    a_padded_ = device_alloc_bf16(static_cast<std::size_t>(E * max_rows_ * K));
    c_padded_ = device_alloc_bf16(static_cast<std::size_t>(E * max_rows_ * N));
    b_ = device_alloc_bf16(static_cast<std::size_t>(E * K * N));
    // Pointer tables, host and device: packed (the layer's) over the non-empty experts,
    // padded over all of them.
    std::int64_t offset = 0;
    for (std::int64_t e = 0; e < E; ++e) {
      const int r = rows[static_cast<std::size_t>(e)];
      if (r > 0) {
        nonempty_rows_.push_back(r);
        packed_host_[0].push_back(at(a_, offset * K));
        packed_host_[1].push_back(at(b_, e * K * N));
        packed_host_[2].push_back(at(c_, offset * N));
      }
      padded_host_[0].push_back(at(a_padded_, e * max_rows_ * K));
      padded_host_[1].push_back(at(b_, e * K * N));
      padded_host_[2].push_back(at(c_padded_, e * max_rows_ * N));
      offset += r;
    }
    for (int i = 0; i < 3; ++i) {
      packed_device_[i] = upload(packed_host_[i]);
      padded_device_[i] = upload(padded_host_[i]);
    }
  }
  ~Stage() {
    for (void* p : {a_, c_, a_padded_, c_padded_, b_}) cudaFree(p);
    for (int i = 0; i < 3; ++i) {
      cudaFree(const_cast<void**>(packed_device_[i]));
      cudaFree(const_cast<void**>(padded_device_[i]));
    }
  }
  Stage(const Stage&) = delete;
  Stage& operator=(const Stage&) = delete;

  std::int64_t total() const { return total_; }
  std::int64_t max_rows() const { return max_rows_; }

  // The layer's grouped product with its current method (MOE_GROUPED_GEMM) and lanes.
  void layer_grouped(GemmLanes& lanes) const {
    auto constant = [](void* const* p) { return const_cast<const void* const*>(p); };
    const GroupedOperands operands{constant(packed_host_[0].data()), constant(packed_host_[1].data()),
                                   packed_host_[2].data(),           constant(packed_device_[0]),
                                   constant(packed_device_[1]),      packed_device_[2]};
    moe::kernels::cuda::grouped_gemm(lanes, GemmPrecision::BF16, nonempty_rows_, static_cast<int>(N_),
                                     static_cast<int>(K_), operands);
  }
  // Row-major C = A·B through column-major cuBLAS: Cᵀ (N × rows) = Bᵀ · Aᵀ.
  void dense(cublasHandle_t h) const {
    const float one = 1.0f, zero = 0.0f;
    CHECK_CUBLAS(cublasGemmEx_64(h, CUBLAS_OP_N, CUBLAS_OP_N, N_, total_, K_, &one, b_, CUDA_R_16BF, N_, a_,
                                 CUDA_R_16BF, K_, &zero, c_, CUDA_R_16BF, N_, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  void batched_max(cublasHandle_t h) const {
    const float one = 1.0f, zero = 0.0f;
    CHECK_CUBLAS(cublasGemmBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(N_), static_cast<int>(max_rows_),
                                     static_cast<int>(K_), &one, padded_device_[1], CUDA_R_16BF, static_cast<int>(N_),
                                     padded_device_[0], CUDA_R_16BF, static_cast<int>(K_), &zero, padded_device_[2],
                                     CUDA_R_16BF, static_cast<int>(N_), static_cast<int>(rows_.size()),
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  void strided_max(cublasHandle_t h) const {
    const float one = 1.0f, zero = 0.0f;
    CHECK_CUBLAS(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(N_),
                                            static_cast<int>(max_rows_), static_cast<int>(K_), &one, b_, CUDA_R_16BF,
                                            static_cast<int>(N_), K_ * N_, a_padded_, CUDA_R_16BF,
                                            static_cast<int>(K_), max_rows_ * K_, &zero, c_padded_, CUDA_R_16BF,
                                            static_cast<int>(N_), max_rows_ * N_, static_cast<int>(rows_.size()),
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

 private:
  // The address `elements` bf16 values past base.
  static void* at(void* base, std::int64_t elements) { return static_cast<char*>(base) + 2 * elements; }
  static void* const* upload(const std::vector<void*>& table) {
    void* device = nullptr;
    CHECK_CUDA(cudaMalloc(&device, table.size() * sizeof(void*)));
    CHECK_CUDA(cudaMemcpy(device, table.data(), table.size() * sizeof(void*), cudaMemcpyHostToDevice));
    return static_cast<void* const*>(device);
  }
  std::vector<int> rows_, nonempty_rows_;
  std::int64_t K_, N_, total_ = 0, max_rows_ = 0;
  void *a_, *c_, *a_padded_, *c_padded_, *b_;
  std::vector<void*> packed_host_[3], padded_host_[3];  // A, B, C
  void* const* packed_device_[3];
  void* const* padded_device_[3];
};

// Median ms of `run` on `stream`, timed by events.
double median_ms(const std::function<void()>& run, cudaStream_t stream, int reps) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) run();
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    CHECK_CUDA(cudaEventRecord(start, stream));
    run();
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  cudaEventDestroy(start), cudaEventDestroy(stop);
  return moe::bench::median(times);
}

int run(int argc, char** argv) {
  CLI::App app{"the experts' grouped products, each way of launching them, against one dense product"};
  ShapeOptions shape_options;
  shape_options.config = "fine";
  int reps = 20;
  bool header = false;
  shape_options.add_to(app);
  app.add_option("--reps", reps);
  app.add_flag("--header", header);
  CLI11_PARSE(app, argc, argv);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "gemm_methods: no CUDA device\n");
    return 77;
  }
  const Shape s = shape_options.shape();
  const std::string& config = shape_options.config;
  const std::vector<int> rows = routed_rows(s.E, s.k, s.T);
  const std::int64_t GF = s.kind == "glu" ? 2 * s.F : s.F;

  cudaStream_t stream;
  cublasHandle_t handle;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CHECK_CUBLAS(cublasCreate(&handle));
  CHECK_CUBLAS(cublasSetStream(handle, stream));
  if (header)
    std::printf("config,kind,E,k,H,F,T,stage,K,N,method,rows_min,rows_mean,rows_max,ms,TFLOPs,dense_over_method\n");
  struct StageShape {
    const char* name;
    std::int64_t K, N;
  };
  for (const StageShape& shape : {StageShape{"in", s.H, GF}, StageShape{"out", s.F, s.H}}) {
    const Stage stage(rows, shape.K, shape.N);
    CHECK_CUDA(cudaDeviceSynchronize());
    const double flops = 2.0 * static_cast<double>(stage.total()) * shape.K * shape.N;
    GemmLanes one_lane(1, stream, handle), four_lanes(4, stream, handle),
        four_sharing(4, stream, handle, /*share_sms=*/true);
    auto layer = [&](const char* method, GemmLanes& lanes) {
      return [&lanes, &stage, method] {
        setenv("MOE_GROUPED_GEMM", method, 1);
        stage.layer_grouped(lanes);
      };
    };
    const std::vector<std::pair<const char*, std::function<void()>>> methods = {
        {"dense", [&] { stage.dense(handle); }},
        {"per_group_1", layer("per_group", one_lane)},
        {"per_group_4", layer("per_group", four_lanes)},
        {"per_group_4_share", layer("per_group", four_sharing)},
        {"one_launch", layer("one_launch", one_lane)},
        {"batched_max", [&] { stage.batched_max(handle); }},
        {"strided_max", [&] { stage.strided_max(handle); }}};
    double dense_ms = 0;
    for (const auto& [name, method] : methods) {
      const double ms = median_ms(method, stream, reps);
      if (dense_ms == 0) dense_ms = ms;
      std::printf("%s,%s,%ld,%ld,%ld,%ld,%ld,%s,%ld,%ld,%s,%d,%.1f,%ld,%.4f,%.1f,%.3f\n", config.c_str(),
                  s.kind.c_str(), s.E, s.k, s.H, s.F, s.T, shape.name, shape.K, shape.N, name,
                  *std::min_element(rows.begin(), rows.end()), static_cast<double>(stage.total()) / s.E,
                  stage.max_rows(), ms, flops / (ms * 1e-3) / 1e12, dense_ms / ms);
      std::fflush(stdout);
    }
    unsetenv("MOE_GROUPED_GEMM");
  }
  cublasDestroy(handle);
  cudaStreamDestroy(stream);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_reporting_errors(run, argc, argv); }
