// Row-major GEMM through cuBLAS (which is column-major): C = α·op(A)·op(B) + β·C.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/ops.hpp"

namespace moe::kernels::cuda {

// FP32: cublasSgemm-equivalent (no tensor cores); TF32: FP32 data, tensor cores with
// 10-bit-mantissa inputs; BF16: a and b are bfloat16 arrays, C is FP32, FP32 accumulation.
void gemm(cublasHandle_t handle, GemmPrecision precision, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
          std::int64_t k, float alpha, const void* a, std::int64_t lda, const void* b, std::int64_t ldb, float beta,
          float* c, std::int64_t ldc);

// gemm() with K split into `slices` (kernels/cuda/split_k.cuh): one strided-batched
// launch writes each slice's partial product into partials [slices, m, n], then one pass
// on the handle's stream sums them into C (with beta · C). FP32 or TF32 (float operands).
void gemm_split_k(cublasHandle_t handle, GemmPrecision precision, bool trans_a, bool trans_b, std::int64_t m,
                  std::int64_t n, std::int64_t k, float alpha, const float* a, std::int64_t lda, const float* b,
                  std::int64_t ldb, float beta, float* c, std::int64_t ldc, int slices, float* partials);

// Marks `bytes` from c as written by the work queued on `stream` so far, for
// compute-sanitizer's initcheck, which does not see what cuBLAS's kernels write (every
// product's output is marked; gemm.cu says how this was found).
void mark_written_on(cudaStream_t stream, const void* c, std::size_t bytes);

// MOE_GEMM_EPILOGUE=1: the experts' first product adds the bias and applies ReLU in
// cuBLASLt's epilogue (epilogue_gemm.cuh; a trial); 0 or unset: not; anything else is an
// error naming it.
bool gemm_epilogue_from_environment();

// MOE_GEMM_SPLIT_K=0 turns the split off (for measuring it, or should it misbehave);
// 1 or unset: on; anything else is an error naming it.
bool gemm_split_k_from_environment();

// MOE_BIAS_GRADIENT_SUMS_IN_EPILOGUE=1: a bf16 backward sums the input biases'
// gradients as the hidden epilogue's backward writes ∂L/∂z, instead of in a pass of
// their own over it (launch_expert_hidden_backward_with_sums; a trial, off: the sixth
// GPU check timed no gain, docs/design.md §4b. Its test keeps the separate pass's bits
// checked against it); anything but 1, 0 or unset is an error naming it.
bool bias_gradient_sums_in_epilogue_from_environment();

// How a grouped product is launched. OneLaunch: cublasGemmGroupedBatchedEx, every group
// in one launch. PerGroup: one cublasGemmEx per non-empty group, each with the kernel
// cuBLAS picks for that shape (Hopper's own kernels), at a launch per group, the groups
// spread over GemmLanes. Batched: cublasGemmBatchedEx, one launch for groups of equal
// rows (experts padded to one row count: the padded layout, or static shapes).
// MOE_GROUPED_GEMM=one_launch|per_group|batched forces one (for measuring them; batched
// only where every group has the same rows, else the rules below); otherwise
// grouped_gemm_method takes Batched for bf16 groups of one row count and picks by the
// groups' mean rows for the rest (docs/design.md §4b).
enum class GroupedGemmMethod { OneLaunch, PerGroup, Batched };
GroupedGemmMethod grouped_gemm_method(const std::vector<int>& rows, GemmPrecision precision);

// A grouped GEMM of row-major products C_g[rows_g, n] = A_g[rows_g, k] · B_g[k, n] over
// the non-empty groups, with their pointers both on the host (PerGroup reads these) and
// on the device (OneLaunch reads these). FP32 (TF32 when asked): every matrix float32.
// BF16: every matrix bfloat16, C included, with FP32 accumulation: on CUDA 13.0 the
// grouped API takes no bf16-in, float32-out combination (cublasGemmEx does), so the
// result is rounded to bf16 once, by either method.
struct GroupedOperands {
  const void* const* a_host;
  const void* const* b_host;
  void* const* c_host;
  const void* const* a_device;
  const void* const* b_device;
  void* const* c_device;
};

// Streams that run a grouped product's per-group GEMMs side by side. One expert's GEMM
// with about a thousand rows (fine-grained experts: 64 of them, 8 chosen) fills a fraction
// of an H100's 132 SMs, and one after another the groups leave the rest idle; on several
// streams they overlap. Each lane is a stream with its own cuBLAS handle (a handle's
// workspace must not be shared by concurrent launches). fork() makes every lane wait for
// the main stream's work so far, join() makes the main stream wait for every lane: both
// are events, so a CUDA-graph capture of the main stream takes the lanes in with it.
// The CUDA ops take the count from MOE_GEMM_STREAMS (gemm_lanes_from_environment); one
// lane runs every group on the main stream, through the main handle.
//
// With share_sms, each side lane's handle is told to plan for its share of the GPU's
// multiprocessors (cublasSetSmCountTarget: ⌈SMs / lanes⌉), so cuBLAS picks each
// product's kernel for the part of the GPU it will get while the other lanes run.
// On an H200 four lanes gave only 2–3% at 64 experts: each expert's product already
// spread one wave of tiles over nearly all SMs. Whether a kernel chosen for a quarter
// of them does better is not measured yet: MOE_GEMM_SM_SHARE=1 turns it on
// (gemm_sm_share_from_environment), for the prepared GPU check to compare.
class GemmLanes {
 public:
  GemmLanes(int lanes, cudaStream_t main, cublasHandle_t main_handle, bool share_sms = false);
  ~GemmLanes();
  GemmLanes(const GemmLanes&) = delete;
  GemmLanes& operator=(const GemmLanes&) = delete;

  int count() const { return static_cast<int>(handles_.size()); }
  // The priority of the main stream, which every lane's stream takes (checked).
  int priority() const;
  cublasHandle_t main_handle() const { return main_handle_; }
  cublasHandle_t handle(int lane) const { return handles_[static_cast<std::size_t>(lane)]; }
  void fork();
  void join();

 private:
  void release() noexcept;

  cudaStream_t main_;
  cublasHandle_t main_handle_;
  std::vector<cudaStream_t> streams_;  // the side lanes' (none with one lane)
  std::vector<cublasHandle_t> handles_;  // lane i's; lane 0 is the main stream's with one lane
  cudaEvent_t forked_ = nullptr;
  std::vector<cudaEvent_t> done_;
};

// The lane count MOE_GEMM_STREAMS=N asks for (an error naming it unless 1 to 8), else 4.
int gemm_lanes_from_environment();
// MOE_GEMM_SM_SHARE=1: the lanes' handles plan for their share of the SMs (above); 0 or
// unset: not; anything else is an error naming it.
bool gemm_sm_share_from_environment();

void grouped_gemm(GemmLanes& lanes, GemmPrecision precision, const std::vector<int>& rows, int n, int k,
                  const GroupedOperands& operands);

}  // namespace moe::kernels::cuda
