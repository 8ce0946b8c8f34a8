// Row-major GEMM through cuBLAS (which is column-major): C = α·op(A)·op(B) + β·C.
#pragma once

#include <cublas_v2.h>

#include <cstdint>

#include "kernels/ops.hpp"

namespace moe::kernels::cuda {

// FP32: cublasSgemm-equivalent (no tensor cores); TF32: FP32 data, tensor cores with
// 10-bit-mantissa inputs; BF16: a and b are bfloat16 arrays, C is FP32, FP32 accumulation.
void gemm(cublasHandle_t handle, GemmPrecision precision, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
          std::int64_t k, float alpha, const void* a, std::int64_t lda, const void* b, std::int64_t ldb, float beta,
          float* c, std::int64_t ldc);

}  // namespace moe::kernels::cuda
