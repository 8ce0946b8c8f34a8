#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/gemm.cuh"
#include "moe/error.hpp"

namespace moe::kernels::cuda {

void gemm(cublasHandle_t handle, GemmPrecision precision, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
          std::int64_t k, float alpha, const void* a, std::int64_t lda, const void* b, std::int64_t ldb, float beta,
          float* c, std::int64_t ldc) {
  if (m == 0 || n == 0) return;
  const cudaDataType_t input = precision == GemmPrecision::BF16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasComputeType_t compute =
      precision == GemmPrecision::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  // Row-major C (m×n) is column-major Cᵀ (n×m) = op(B)ᵀ·op(A)ᵀ: swap the operands.
  MOE_CHECK(Cublas, cublasGemmEx_64(handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    n, m, k, &alpha, b, input, ldb, a, input, lda, &beta, c, CUDA_R_32F, ldc, compute,
                                    CUBLAS_GEMM_DEFAULT));
}

void grouped_gemm(cublasHandle_t handle, GemmPrecision precision, const std::vector<int>& rows, int n, int k,
                  const float* const* a_device, const float* const* b_device, float* const* c_device) {
  const int groups = static_cast<int>(rows.size());
  if (groups == 0) return;
  // Column-major per group: C_gᵀ (n × rows_g) = B_gᵀ (n × k) · A_gᵀ (k × rows_g).
  const std::vector<cublasOperation_t> no(rows.size(), CUBLAS_OP_N);
  const std::vector<int> m_array(rows.size(), n), k_array(rows.size(), k), lda(rows.size(), n), ldb(rows.size(), k),
      ldc(rows.size(), n), sizes(rows.size(), 1);
  const std::vector<float> alpha(rows.size(), 1.0f), beta(rows.size(), 0.0f);
  const cublasComputeType_t compute =
      precision == GemmPrecision::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  MOE_CHECK(Cublas, cublasGemmGroupedBatchedEx(handle, no.data(), no.data(), m_array.data(), rows.data(),
                                               k_array.data(), alpha.data(),
                                               reinterpret_cast<const void* const*>(b_device), CUDA_R_32F, lda.data(),
                                               reinterpret_cast<const void* const*>(a_device), CUDA_R_32F, ldb.data(),
                                               beta.data(), reinterpret_cast<void* const*>(c_device), CUDA_R_32F,
                                               ldc.data(), groups, sizes.data(), compute));
}

}  // namespace moe::kernels::cuda
