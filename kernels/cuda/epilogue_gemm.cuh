// The experts' first product with its bias and ReLU in cuBLASLt's epilogue, a trial (on
// with MOE_GEMM_EPILOGUE=1; docs/design.md §4b). Per expert, hidden = relu(x·W_in +
// b_in) in bf16, written by the GEMM itself. Otherwise the products write z in bf16 and
// launch_expert_hidden reads it back, adds the bias and applies the activation: 287 µs
// of a 3.3 ms fine-grained forward on an H200 (ncu, check 3 of 2026-11-27), about 134 MB
// written and read again at the mid config. Issue 11 asks for bias, activation and cast
// in the GEMM's epilogue; cuBLASLt has no grouped matmul on CUDA 13.0, but the experts'
// products launch one per expert anyway (gemm.cuh: faster than the grouped launch).
//
// Only where the epilogue is moe's function: inference forwards of ffn experts with
// ReLU. cuBLASLt's GELU is not moe's erf GELU, glu multiplies two products' columns, and
// a training forward keeps the pre-activations, which this epilogue does not write.
//
// cuBLASLt documents its ReLU as max(x, 0), which may turn NaN into 0 where moe's passes
// it through (kernels/activation.hpp), and whether it takes a float32 bias with bf16
// output is the library's choice (the fourth check's cuBLAS of CUDA 13 refused it). So when
// the CUDA ops are made, a small product with a NaN in one row and exact values elsewhere is run and
// checked on the host (usable()), with a float32 bias and, if that is refused, a bf16
// one (the bias then rounded to bf16 before it is added); where it disagrees or
// cuBLASLt refuses both, the ops keep the separate epilogue kernel and say why.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cuda/gemm.cuh"

namespace moe::kernels::cuda {

class ReluEpilogueProducts {
 public:
  explicit ReluEpilogueProducts(GemmLanes& lanes);
  ~ReluEpilogueProducts();
  ReluEpilogueProducts(const ReluEpilogueProducts&) = delete;
  ReluEpilogueProducts& operator=(const ReluEpilogueProducts&) = delete;

  // Whether run() computes moe's ReLU with cuBLASLt here: probed at the first call,
  // which waits for the GPU (so not while a CUDA graph is recorded: the CUDA ops call it
  // when they are made).
  bool usable();
  // usable()'s answer once probed; false before.
  bool usable_as_probed() const { return probed_ && usable_; }
  const std::string& why_not() const { return why_not_; }
  // Whether run() takes each bias in bf16 (the probe's float32 bias refused), not float32.
  bool bias_in_bf16() const { return bias_type_ == CUDA_R_16BF; }

  // Per group g, on the GEMM lanes as grouped_gemm's per-group products: h_g [rows_g, n]
  // (bf16) = relu(x_g [rows_g, k] (bf16) · w_g [k, n] (bf16) + bias_g [n]), float32
  // accumulation, bias_g float32 or, where bias_in_bf16(), bf16 (null: none), rounded to
  // bf16 once.
  void run(const std::vector<int>& rows, int n, int k, const void* const* x, const void* const* w, void* const* h,
           const void* const* bias);

 private:
  // One product on `stream` with `workspace`; cuBLASLt's status, not thrown (the probe
  // reports it).
  cublasStatus_t product(cudaStream_t stream, void* workspace, int rows, int n, int k, const void* x, const void* w,
                         void* h, const void* bias, cudaDataType_t bias_type);
  void probe();

  GemmLanes& lanes_;
  cublasLtHandle_t handle_ = nullptr;
  std::vector<void*> workspaces_;  // lane i's, then the main stream's: concurrent products need their own
  // The algorithm cuBLASLt's heuristic gave each shape, alignment and bias case (its
  // own cache makes the query cheap, but the map skips the query for repeated shapes).
  using Shape = std::tuple<int, int, int, int, bool, cudaDataType_t>;  // rows, n, k, least alignment, bias, its type
  std::map<Shape, cublasLtMatmulAlgo_t> algorithms_;
  cudaDataType_t bias_type_ = CUDA_R_32F;
  bool probed_ = false, usable_ = false;
  std::string why_not_;
};

}  // namespace moe::kernels::cuda
