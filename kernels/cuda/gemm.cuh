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

// One grouped GEMM (cublasGemmGroupedBatchedEx) of row-major products
// C_g[rows_g, n] = A_g[rows_g, k] · B_g[k, n], FP32 data (TF32 when asked); the
// pointer arrays are in device memory, one entry per group.
void grouped_gemm(cublasHandle_t handle, GemmPrecision precision, const std::vector<int>& rows, int n, int k,
                  const float* const* a_device, const float* const* b_device, float* const* c_device);

}  // namespace moe::kernels::cuda
