// GPU benchmark (issue 6): the layer on one GPU, token rows in device memory, against
// cuBLAS doing the same FLOPs as dense GEMMs in the same precision, in the same run.
// Prints CSV: mode,precision,E,k,H,F,T,moe_ms,cublas_ms,ratio (ratio = cublas/moe).
//   gpu_bench [--config mid] [--precision fp32|tf32|bf16] [--mode forward|training] [--reps N]
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <map>
#include <vector>

#include "bench_util.hpp"
#include "moe/layer.hpp"

namespace {

#define CHECK_CUDA(call)                                                                     \
  do {                                                                                       \
    cudaError_t e_ = (call);                                                                 \
    if (e_ != cudaSuccess) {                                                                 \
      std::fprintf(stderr, "gpu_bench: %s failed: %s\n", #call, cudaGetErrorString(e_));     \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)
#define CHECK_CUBLAS(call)                                                                   \
  do {                                                                                       \
    if ((call) != CUBLAS_STATUS_SUCCESS) {                                                   \
      std::fprintf(stderr, "gpu_bench: %s failed\n", #call);                                 \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)

struct Shape {
  std::int64_t E, k, H, F, T;
};
const std::map<std::string, Shape> kShapes = {{"ref", {8, 2, 512, 2048, 128}},
                                              {"mid", {8, 2, 1024, 4096, 4096}},
                                              {"fine", {64, 8, 1024, 512, 4096}}};

void* device_alloc(std::size_t bytes) {
  void* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, bytes));
  CHECK_CUDA(cudaMemset(p, 0, bytes));
  return p;
}

// Dense GEMMs of the same FLOPs: the gate [T,H]·[H,E] and the expert pair over T·k
// rows (and, for training, each product's two backward products).
class CublasBaseline {
 public:
  CublasBaseline(const Shape& s, moe::Precision p, bool training) : s_(s), p_(p), training_(training) {
    CHECK_CUBLAS(cublasCreate(&h_));
    const std::size_t e = p == moe::Precision::BF16 ? 2 : 4;
    const std::size_t n = static_cast<std::size_t>(s.T * s.k);
    x_ = device_alloc(s.T * s.H * 4), gate_ = device_alloc(s.H * s.E * 4), logits_ = device_alloc(s.T * s.E * 4);
    rows_ = device_alloc(n * s.H * e), w1_ = device_alloc(s.H * s.F * e), hid_ = device_alloc(n * s.F * 4);
    hid_in_ = device_alloc(n * s.F * e), w2_ = device_alloc(s.F * s.H * e), out_ = device_alloc(n * s.H * 4);
    d_ = device_alloc(std::max(n * s.F, n * s.H) * 4), dw_ = device_alloc(std::max(s.H * s.F, s.H * s.E) * 4);
  }
  void run() {
    const int n = static_cast<int>(s_.T * s_.k);
    gemm(false, false, s_.T, s_.E, s_.H, x_, gate_, logits_, moe::Precision::FP32);
    gemm(false, false, n, s_.F, s_.H, rows_, w1_, hid_, p_);
    gemm(false, false, n, s_.H, s_.F, hid_in_, w2_, out_, p_);
    if (training_) {  // backward products, in FP32 (or TF32): moe's backward precision
      const moe::Precision b = p_ == moe::Precision::TF32 ? moe::Precision::TF32 : moe::Precision::FP32;
      gemm(false, true, n, s_.F, s_.H, out_, w1_f(), d_, b);
      gemm(true, false, s_.F, s_.H, n, hid_, out_, dw_, b);
      gemm(false, true, n, s_.H, s_.F, d_, w1_f(), out_, b);
      gemm(true, false, s_.H, s_.F, n, out_, d_, dw_, b);
      gemm(false, true, s_.T, s_.H, s_.E, logits_, gate_, x_, moe::Precision::FP32);
      gemm(true, false, s_.H, s_.E, s_.T, x_, logits_, dw_, moe::Precision::FP32);
    }
  }
  double flops() const {
    const double f = 4.0 * s_.T * s_.k * s_.H * s_.F + 2.0 * s_.T * s_.H * s_.E;
    return training_ ? 3 * f : f;
  }

 private:
  void* w1_f() {
    if (!w1f_) w1f_ = device_alloc(s_.H * s_.F * 4);
    return w1f_;
  }
  // Row-major C = op(A)·op(B) through column-major cuBLAS (operands swapped).
  void gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, const void* a, const void* b, void* c,
            moe::Precision p) {
    const float one = 1.0f, zero = 0.0f;
    const cudaDataType_t in = p == moe::Precision::BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasComputeType_t compute = p == moe::Precision::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    CHECK_CUBLAS(cublasGemmEx_64(h_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &one, b,
                                 in, tb ? k : n, a, in, ta ? m : k, &zero, c, CUDA_R_32F, n, compute,
                                 CUBLAS_GEMM_DEFAULT));
  }
  Shape s_;
  moe::Precision p_;
  bool training_;
  cublasHandle_t h_;
  void *x_, *gate_, *logits_, *rows_, *w1_, *hid_, *hid_in_, *w2_, *out_, *d_, *dw_, *w1f_ = nullptr;
};

double median_ms(const std::function<void()>& run, int reps) {
  for (int i = 0; i < 3; ++i) run();
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    run();
    CHECK_CUDA(cudaDeviceSynchronize());
    times.push_back(moe::bench::seconds_since(start) * 1e3);
  }
  return moe::bench::median(times);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moe GPU benchmark against cuBLAS of the same FLOPs"};
  std::string config = "mid", precision = "bf16", mode = "forward";
  int reps = 20;
  bool header = false;
  app.add_option("--config", config)->check(CLI::IsMember({"ref", "mid", "fine"}));
  app.add_option("--precision", precision)->check(CLI::IsMember({"fp32", "tf32", "bf16"}));
  app.add_option("--mode", mode)->check(CLI::IsMember({"forward", "training"}));
  app.add_option("--reps", reps);
  app.add_flag("--header", header);
  CLI11_PARSE(app, argc, argv);
  if (moe::cuda_device_count() == 0) {
    std::fprintf(stderr, "gpu_bench: no CUDA device\n");
    return 77;
  }
  const Shape s = kShapes.at(config);
  const bool training = mode == "training";
  moe::LayerOptions options;
  options.device = moe::Device::CUDA;
  options.precision = precision == "fp32" ? moe::Precision::FP32
                      : precision == "tf32" ? moe::Precision::TF32
                                            : moe::Precision::BF16;
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::MoELayer layer(moe::MOEConfig(s.E, s.k, s.H, s.F), *comm, 1, options);
  layer.set_gate_weights(moe::Tensor<float>({s.H, s.E}, moe::bench::random_vector(s.H * s.E, 0.02f, 11)));
  const std::vector<float> host_x = moe::bench::random_vector(s.T * s.H, 1.0f, 10);
  float *x = static_cast<float*>(device_alloc(host_x.size() * 4)), *out = static_cast<float*>(device_alloc(host_x.size() * 4));
  float* grad_in = static_cast<float*>(device_alloc(host_x.size() * 4));
  CHECK_CUDA(cudaMemcpy(x, host_x.data(), host_x.size() * 4, cudaMemcpyHostToDevice));
  auto step = [&] {
    layer.forward(x, s.T, out, training ? moe::Pass::Training : moe::Pass::Inference);
    if (training) layer.backward(out, grad_in);  // any gradient will do for timing
  };
  CublasBaseline baseline(s, options.precision, training);
  const double moe_ms = median_ms(step, reps);
  const double cublas_ms = median_ms([&] { baseline.run(); }, reps);
  if (header) std::printf("mode,precision,E,k,H,F,T,moe_ms,cublas_ms,moe_TFLOPs,ratio\n");
  std::printf("%s,%s,%ld,%ld,%ld,%ld,%ld,%.3f,%.3f,%.1f,%.3f\n", mode.c_str(), precision.c_str(), s.E, s.k, s.H, s.F,
              s.T, moe_ms, cublas_ms, baseline.flops() / (moe_ms * 1e-3) / 1e12, cublas_ms / moe_ms);
  return 0;
}
