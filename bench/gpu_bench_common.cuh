// What the GPU benchmarks share: error checks that end the program with the failing
// call, the shapes of issue 11, and device memory filled with small non-zero values.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <cerrno>  // program_invocation_short_name
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <string>

// Ends the program naming the call that failed and why, unless ok.
inline void exit_unless(bool ok, const char* call, const char* why) {
  if (ok) return;
  std::fprintf(stderr, "%s: %s failed: %s\n", program_invocation_short_name, call, why);
  std::exit(1);
}
#define CHECK_CUDA(call)                                                 \
  do {                                                                   \
    const cudaError_t e_ = (call);                                       \
    exit_unless(e_ == cudaSuccess, #call, cudaGetErrorString(e_));       \
  } while (0)
#define CHECK_CUBLAS(call)                                                        \
  do {                                                                            \
    const cublasStatus_t s_ = (call);                                             \
    exit_unless(s_ == CUBLAS_STATUS_SUCCESS, #call, cublasGetStatusString(s_));   \
  } while (0)

namespace {

struct Shape {
  std::int64_t E, k, H, F, T;
  std::string kind = "ffn", router = "softmax";
  std::int64_t groups = 1, topk_groups = 1, shared = 0;
};
// The shapes of issue 11: mid, Mixtral-like (8 of 14336-wide experts), fine-grained, and
// DeepSeek-like (one rank's 64 of a 256-expert layer: glu, sigmoid router with 8 groups,
// shared expert 2048).
const std::map<std::string, Shape> kShapes = {
    {"ref", {8, 2, 512, 2048, 128}},
    {"mid", {8, 2, 1024, 4096, 4096}},
    {"mixtral", {8, 2, 4096, 14336, 8192}},
    {"fine", {64, 8, 2048, 1408, 8192}},
    {"deepseek", {64, 8, 7168, 2048, 4096, "glu", "sigmoid", 8, 4, 2048}}};

// The shape options both benchmarks take: a named shape, then any of its sizes and its
// expert kind overridden.
struct ShapeOptions {
  std::string config = "mid", kind;
  std::int64_t E = 0, k = 0, H = 0, F = 0, T = 0;
  void add_to(CLI::App& app) {
    app.add_option("--config", config)->check(CLI::IsMember({"ref", "mid", "mixtral", "fine", "deepseek"}));
    app.add_option("--experts", E), app.add_option("--top-k", k), app.add_option("--hidden", H);
    app.add_option("--expert-dim", F), app.add_option("--tokens", T);
    app.add_option("--kind", kind)->check(CLI::IsMember({"ffn", "glu"}));
  }
  Shape shape() const {
    Shape s = kShapes.at(config);
    if (E) s.E = E;
    if (k) s.k = k;
    if (H) s.H = H;
    if (F) s.F = F;
    if (T) s.T = T;
    if (!kind.empty()) s.kind = kind;
    return s;
  }
};

// main's body: run, and a bad shape or option (a moe::Error from the layer's checks, a
// std::exception from anything else) ends the program with its message.
int run_reporting_errors(int (*run)(int, char**), int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program_invocation_short_name, e.what());
    return 2;
  }
}

__global__ void fill_kernel(float* p, std::size_t n) {
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x)
    p[i] = 0.01f * static_cast<float>(static_cast<int>(i % 199) - 99);  // not zeros: zeros run cooler
}

// Device memory of `bytes` (a multiple of 4), filled with small float32 values. (Read as
// bf16, their low halves are arbitrary values: the dense baseline's timing does not
// depend on them; device_alloc_bf16 fills bf16 properly.)
void* device_alloc(std::size_t bytes) {
  void* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, bytes));
  fill_kernel<<<1024, 256>>>(static_cast<float*>(p), bytes / 4);
  CHECK_CUDA(cudaGetLastError());
  return p;
}

__global__ void fill_bf16_kernel(std::uint16_t* p, std::size_t n) {
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    const float v = 0.01f * static_cast<float>(static_cast<int>(i % 199) - 99);
    std::uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    p[i] = static_cast<std::uint16_t>(bits >> 16);  // bf16 by truncation: a small value
  }
}

// Device memory for `count` bf16 values, filled with small non-zero values.
void* device_alloc_bf16(std::size_t count) {
  void* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, 2 * count));
  fill_bf16_kernel<<<1024, 256>>>(static_cast<std::uint16_t*>(p), count);
  CHECK_CUDA(cudaGetLastError());
  return p;
}

}  // namespace
