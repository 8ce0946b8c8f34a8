// Row-major GEMM through cuBLAS (which is column-major): C = α·op(A)·op(B) + β·C.
#pragma once

#include <cublas_v2.h>

#include <cstdint>
#include <vector>

#include "kernels/ops.hpp"

namespace moe::kernels::cuda {

// FP32: cublasSgemm-equivalent (no tensor cores); TF32: FP32 data, tensor cores with
// 10-bit-mantissa inputs; BF16: a and b are bfloat16 arrays, C is FP32, FP32 accumulation.
void gemm(cublasHandle_t handle, GemmPrecision precision, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
          std::int64_t k, float alpha, const void* a, std::int64_t lda, const void* b, std::int64_t ldb, float beta,
          float* c, std::int64_t ldc);

// How a grouped product is launched. OneLaunch: cublasGemmGroupedBatchedEx, every group
// in one launch. PerGroup: one cublasGemmEx per non-empty group, each with the kernel
// cuBLAS picks for that shape (Hopper's own kernels), at a launch per group.
// MOE_GROUPED_GEMM=one_launch|per_group forces one (for measuring both); otherwise
// grouped_gemm_method picks by the groups' mean rows (docs/design.md §4b).
enum class GroupedGemmMethod { OneLaunch, PerGroup };
GroupedGemmMethod grouped_gemm_method(const std::vector<int>& rows);

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
void grouped_gemm(cublasHandle_t handle, GemmPrecision precision, const std::vector<int>& rows, int n, int k,
                  const GroupedOperands& operands);

}  // namespace moe::kernels::cuda
