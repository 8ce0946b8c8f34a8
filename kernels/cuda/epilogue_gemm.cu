#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <utility>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/epilogue_gemm.cuh"
#include "moe/error.hpp"

namespace moe::kernels::cuda {
namespace {

// cuBLAS's recommended workspace on Hopper.
constexpr std::size_t kWorkspaceBytes = std::size_t{32} << 20;

// The largest power of two, at most 256, that divides the address: what cuBLASLt's
// heuristic may assume of each matrix (its default, 256, would admit kernels that need
// more than an expert's rows from an offset into an array give).
int alignment_of(const void* p) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  int alignment = 256;
  while (alignment > 1 && address % static_cast<std::uintptr_t>(alignment) != 0) alignment /= 2;
  return alignment;
}

// cuBLASLt's descriptors for one product, released however it ends.
struct Descriptors {
  cublasLtMatmulDesc_t matmul = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  ~Descriptors() {
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (matmul) cublasLtMatmulDescDestroy(matmul);
  }
};

#define MOE_LT_TRY(call)                                 \
  do {                                                   \
    const cublasStatus_t status_ = (call);               \
    if (status_ != CUBLAS_STATUS_SUCCESS) return status_; \
  } while (0)

// bf16 bits of a float that bf16 holds exactly (the probe's values), and back.
std::uint16_t bf16_bits(float v) {
  std::uint32_t bits = 0;
  std::memcpy(&bits, &v, sizeof bits);
  return static_cast<std::uint16_t>(bits >> 16);
}
float bf16_value(std::uint16_t b) {
  const std::uint32_t bits = static_cast<std::uint32_t>(b) << 16;
  float v = 0.0f;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

}  // namespace

ReluEpilogueProducts::ReluEpilogueProducts(GemmLanes& lanes) : lanes_(lanes) {
  MOE_CHECK(Cublas, cublasLtCreate(&handle_));
  try {
    for (int i = 0; i <= lanes.count(); ++i) {
      workspaces_.push_back(nullptr);
      MOE_CHECK(Cuda, cudaMalloc(&workspaces_.back(), kWorkspaceBytes));
    }
  } catch (...) {
    for (void* w : workspaces_)
      if (w) cudaFree(w);
    cublasLtDestroy(handle_);
    throw;
  }
}

ReluEpilogueProducts::~ReluEpilogueProducts() {
  // The products queued on the lanes and the main stream may still read the workspaces.
  if (cudaDeviceSynchronize() != cudaSuccess) std::fprintf(stderr, "moe: a GEMM stream failed\n");
  for (void* w : workspaces_)
    if (w && cudaFree(w) != cudaSuccess) std::fprintf(stderr, "moe: cudaFree failed\n");
  if (handle_ && cublasLtDestroy(handle_) != CUBLAS_STATUS_SUCCESS)
    std::fprintf(stderr, "moe: cublasLtDestroy failed\n");
}

cublasStatus_t ReluEpilogueProducts::product(cudaStream_t stream, void* workspace, int rows, int n, int k,
                                             const void* x, const void* w, void* h, const void* bias,
                                             cudaDataType_t bias_type) {
  // Row-major h [rows, n] = x [rows, k] · w [k, n] is column-major hᵀ (n × rows) =
  // wᵀ (n × k) · xᵀ (k × rows), as gemm() swaps its operands; the bias, one value per
  // column of h, is one per row of hᵀ, as cuBLASLt's epilogue adds it.
  Descriptors desc;
  MOE_LT_TRY(cublasLtMatmulDescCreate(&desc.matmul, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t no_transpose = CUBLAS_OP_N;
  for (const auto attribute : {CUBLASLT_MATMUL_DESC_TRANSA, CUBLASLT_MATMUL_DESC_TRANSB})
    MOE_LT_TRY(cublasLtMatmulDescSetAttribute(desc.matmul, attribute, &no_transpose, sizeof no_transpose));
  const cublasLtEpilogue_t epilogue = bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
  MOE_LT_TRY(cublasLtMatmulDescSetAttribute(desc.matmul, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
  if (bias) {
    const std::int32_t type = bias_type;
    MOE_LT_TRY(cublasLtMatmulDescSetAttribute(desc.matmul, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &type, sizeof type));
    MOE_LT_TRY(cublasLtMatmulDescSetAttribute(desc.matmul, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  }
  MOE_LT_TRY(cublasLtMatrixLayoutCreate(&desc.a, CUDA_R_16BF, static_cast<std::uint64_t>(n),
                                        static_cast<std::uint64_t>(k), n));
  MOE_LT_TRY(cublasLtMatrixLayoutCreate(&desc.b, CUDA_R_16BF, static_cast<std::uint64_t>(k),
                                        static_cast<std::uint64_t>(rows), k));
  MOE_LT_TRY(cublasLtMatrixLayoutCreate(&desc.d, CUDA_R_16BF, static_cast<std::uint64_t>(n),
                                        static_cast<std::uint64_t>(rows), n));

  const int alignment = std::min({alignment_of(x), alignment_of(w), alignment_of(h),
                                  bias ? alignment_of(bias) : 256});
  const Shape shape{rows, n, k, alignment, bias != nullptr, bias_type};
  auto found = algorithms_.find(shape);
  if (found == algorithms_.end()) {
    MOE_LT_TRY(cublasLtMatmulPreferenceCreate(&desc.preference));
    const std::uint64_t workspace_bytes = kWorkspaceBytes;
    const std::uint32_t least = static_cast<std::uint32_t>(alignment);
    MOE_LT_TRY(cublasLtMatmulPreferenceSetAttribute(desc.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &workspace_bytes, sizeof workspace_bytes));
    for (const auto attribute :
         {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      MOE_LT_TRY(cublasLtMatmulPreferenceSetAttribute(desc.preference, attribute, &least, sizeof least));
    cublasLtMatmulHeuristicResult_t result{};
    int returned = 0;
    MOE_LT_TRY(cublasLtMatmulAlgoGetHeuristic(handle_, desc.matmul, desc.a, desc.b, desc.d, desc.d, desc.preference, 1,
                                              &result, &returned));
    if (returned == 0) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (result.state != CUBLAS_STATUS_SUCCESS) return result.state;
    found = algorithms_.emplace(shape, result.algo).first;
  }
  const float one = 1.0f, zero = 0.0f;
  MOE_LT_TRY(cublasLtMatmul(handle_, desc.matmul, &one, w, desc.a, x, desc.b, &zero, h, desc.d, h, desc.d,
                            &found->second, workspace, kWorkspaceBytes, stream));
  mark_written_on(stream, h, static_cast<std::size_t>(rows) * static_cast<std::size_t>(n) * 2);
  return CUBLAS_STATUS_SUCCESS;
}

void ReluEpilogueProducts::run(const std::vector<int>& rows, int n, int k, const void* const* x, const void* const* w,
                               void* const* h, const void* const* bias) {
  const int groups = static_cast<int>(rows.size());
  if (groups == 0) return;
  // Group g on lane g mod lanes, a lone group on the main stream, as grouped_gemm's.
  const int used = std::min(lanes_.count(), groups);
  if (used > 1) lanes_.fork();
  for (int g = 0; g < groups; ++g) {
    cublasHandle_t lane = used > 1 ? lanes_.handle(g % used) : lanes_.main_handle();
    cudaStream_t stream = nullptr;
    MOE_CHECK(Cublas, cublasGetStream(lane, &stream));
    void* workspace = workspaces_[static_cast<std::size_t>(used > 1 ? g % used : lanes_.count())];
    MOE_CHECK(Cublas,
              product(stream, workspace, rows[static_cast<std::size_t>(g)], n, k, x[g], w[g], h[g], bias[g], bias_type_));
  }
  if (used > 1) lanes_.join();
}

bool ReluEpilogueProducts::usable() {
  if (!probed_) probe();
  return usable_;
}

// A product of 4 rows with every value exact in bf16 and small enough that the float32
// sums are exact too: the epilogue's output must be relu(x·w + b) rounded once to bf16,
// and row 1, which holds a NaN, must be NaN throughout (moe's ReLU passes NaN through).
// The bias is tried in float32 first (the master bias, added before the one rounding),
// then in bf16 (cuBLASLt's default bias type for a bf16 output: the fourth check's
// cuBLAS refused the float32 one); the probe's bias values are exact in both.
void ReluEpilogueProducts::probe() {
  probed_ = true;
  constexpr int rows = 4, n = 64, k = 64, nan_row = 1;
  std::vector<std::uint16_t> x(rows * k), w(k * n), h(rows * n, 0), bias16(n);
  std::vector<float> bias(n);
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < k; ++i) x[r * k + i] = bf16_bits(static_cast<float>((r * 7 + i * 3) % 17 - 8) / 8.0f);
  x[nan_row * k + 5] = 0x7FC0;  // a quiet NaN
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < n; ++j) w[i * n + j] = bf16_bits(static_cast<float>((i * 5 + j * 11) % 13 - 6) / 8.0f);
  for (int j = 0; j < n; ++j) bias[j] = static_cast<float>(j % 7 - 3) / 4.0f, bias16[j] = bf16_bits(bias[j]);

  cudaStream_t stream = nullptr;
  MOE_CHECK(Cublas, cublasGetStream(lanes_.main_handle(), &stream));
  void *dx = nullptr, *dw = nullptr, *dh = nullptr, *dbias = nullptr, *dbias16 = nullptr;
  std::string refusals;
  bool accepted = false;  // cuBLASLt ran one of the tries (its values are checked below)
  try {
    MOE_CHECK(Cuda, cudaMalloc(&dx, x.size() * 2));
    MOE_CHECK(Cuda, cudaMalloc(&dw, w.size() * 2));
    MOE_CHECK(Cuda, cudaMalloc(&dh, h.size() * 2));
    MOE_CHECK(Cuda, cudaMalloc(&dbias, bias.size() * 4));
    MOE_CHECK(Cuda, cudaMalloc(&dbias16, bias16.size() * 2));
    MOE_CHECK(Cuda, cudaMemcpyAsync(dx, x.data(), x.size() * 2, cudaMemcpyHostToDevice, stream));
    MOE_CHECK(Cuda, cudaMemcpyAsync(dw, w.data(), w.size() * 2, cudaMemcpyHostToDevice, stream));
    MOE_CHECK(Cuda, cudaMemcpyAsync(dbias, bias.data(), bias.size() * 4, cudaMemcpyHostToDevice, stream));
    MOE_CHECK(Cuda, cudaMemcpyAsync(dbias16, bias16.data(), bias16.size() * 2, cudaMemcpyHostToDevice, stream));
    const std::pair<cudaDataType_t, const void*> tries[] = {{CUDA_R_32F, dbias}, {CUDA_R_16BF, dbias16}};
    for (const auto& [type, device_bias] : tries) {
      MOE_CHECK(Cuda, cudaMemsetAsync(dh, 0, h.size() * 2, stream));
      const cublasStatus_t status = product(stream, workspaces_.back(), rows, n, k, dx, dw, dh, device_bias, type);
      if (status == CUBLAS_STATUS_SUCCESS) {
        MOE_CHECK(Cuda, cudaMemcpyAsync(h.data(), dh, h.size() * 2, cudaMemcpyDeviceToHost, stream));
        MOE_CHECK(Cuda, cudaStreamSynchronize(stream));
        bias_type_ = type;
        accepted = true;
        break;
      }
      refusals += std::string(refusals.empty() ? "" : "; ") + (type == CUDA_R_32F ? "a float32" : "a bf16") +
                  " bias: " + cublasGetStatusString(status);
    }
    MOE_CHECK(Cuda, cudaStreamSynchronize(stream));
  } catch (...) {
    for (void* p : {dx, dw, dh, dbias, dbias16}) cudaFree(p);
    throw;
  }
  for (void* p : {dx, dw, dh, dbias, dbias16}) MOE_CHECK(Cuda, cudaFree(p));
  if (!accepted) {
    why_not_ = "cuBLASLt refused a bf16 product with ReLU and " + refusals;
    return;
  }
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < n; ++j) {
      const float got = bf16_value(h[r * n + j]);
      if (r == nan_row) {
        if (!std::isnan(got)) {
          why_not_ = "cuBLASLt's ReLU epilogue turns NaN into " + std::to_string(got) +
                     "; moe's ReLU passes NaN through";
          return;
        }
        continue;
      }
      double z = bias[j];
      for (int i = 0; i < k; ++i) z += static_cast<double>(bf16_value(x[r * k + i])) * bf16_value(w[i * n + j]);
      const double want = z < 0.0 ? 0.0 : z;
      if (std::fabs(got - want) > 1e-2 * std::max(1.0, std::fabs(want))) {
        why_not_ = "cuBLASLt's ReLU epilogue gave " + std::to_string(got) + " where relu(x·w + b) is " +
                   std::to_string(want) + " (row " + std::to_string(r) + ", column " + std::to_string(j) + ")";
        return;
      }
    }
  usable_ = true;
}

}  // namespace moe::kernels::cuda
