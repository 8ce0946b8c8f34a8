#include <cstdlib>
#include <cstring>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/gemm.cuh"
#include "moe/error.hpp"

namespace moe::kernels::cuda {
namespace {

// From this many rows per group on average, one cublasGemmEx per group beats one
// cublasGemmGroupedBatchedEx launch (measured on an H200, docs/performance.md).
constexpr long long kPerGroupMinMeanRows = 512;

}  // namespace

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

GroupedGemmMethod grouped_gemm_method(const std::vector<int>& rows) {
  if (const char* forced = std::getenv("MOE_GROUPED_GEMM"); forced && *forced) {
    if (std::strcmp(forced, "one_launch") == 0) return GroupedGemmMethod::OneLaunch;
    if (std::strcmp(forced, "per_group") == 0) return GroupedGemmMethod::PerGroup;
    MOE_CHECK_ARG(false, "grouped GEMM", "MOE_GROUPED_GEMM = '", forced,
                  "'; expected one_launch, per_group, or unset (chosen by size)");
  }
  long long total = 0;
  for (int r : rows) total += r;
  return rows.empty() || total / static_cast<long long>(rows.size()) >= kPerGroupMinMeanRows
             ? GroupedGemmMethod::PerGroup
             : GroupedGemmMethod::OneLaunch;
}

void grouped_gemm(cublasHandle_t handle, GemmPrecision precision, const std::vector<int>& rows, int n, int k,
                  const GroupedOperands& operands) {
  const int groups = static_cast<int>(rows.size());
  if (groups == 0) return;
  const cublasComputeType_t compute =
      precision == GemmPrecision::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const cudaDataType_t type = precision == GemmPrecision::BF16 ? CUDA_R_16BF : CUDA_R_32F;
  const float one = 1.0f, zero = 0.0f;
  if (grouped_gemm_method(rows) == GroupedGemmMethod::PerGroup) {
    // Column-major per group: C_gᵀ (n × rows_g) = B_gᵀ (n × k) · A_gᵀ (k × rows_g).
    for (int g = 0; g < groups; ++g)
      MOE_CHECK(Cublas, cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, rows[static_cast<std::size_t>(g)], k, &one,
                                     operands.b_host[g], type, n, operands.a_host[g], type, k, &zero,
                                     operands.c_host[g], type, n, compute, CUBLAS_GEMM_DEFAULT));
    return;
  }
  const std::vector<cublasOperation_t> no(rows.size(), CUBLAS_OP_N);
  const std::vector<int> m_array(rows.size(), n), k_array(rows.size(), k), lda(rows.size(), n), ldb(rows.size(), k),
      ldc(rows.size(), n), sizes(rows.size(), 1);
  const std::vector<float> alpha(rows.size(), 1.0f), beta(rows.size(), 0.0f);
  MOE_CHECK(Cublas, cublasGemmGroupedBatchedEx(handle, no.data(), no.data(), m_array.data(), rows.data(),
                                               k_array.data(), alpha.data(), operands.b_device, type, lda.data(),
                                               operands.a_device, type, ldb.data(), beta.data(), operands.c_device,
                                               type, ldc.data(), groups, sizes.data(), compute));
}

}  // namespace moe::kernels::cuda
