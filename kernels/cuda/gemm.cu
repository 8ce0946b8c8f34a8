#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <nvtx3/nvToolsExtMemCudaRt.h>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/environment.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/split_k.cuh"
#include "moe/error.hpp"

namespace moe::kernels::cuda {
namespace {

// From this many rows per group on average, one cublasGemmEx per group beats one
// cublasGemmGroupedBatchedEx launch (measured on an H200, docs/performance.md).
constexpr long long kPerGroupMinMeanRows = 512;
constexpr int kDefaultGemmLanes = 4, kMaxGemmLanes = 8;

// compute-sanitizer's initcheck does not see what cuBLAS's kernels write on an H200: it
// reported every element of a bf16 GEMM's fresh C as uninitialised when a kernel of ours
// read it, while the values read were the product (CudaOps.Bf16ExpertGemmWritesAllOfAFreshC,
// docs/performance.md). So each product's C is marked written through NVTX's memory API,
// which the tool reads; initcheck's reports are then reads of memory nothing wrote.
// Without a tool attached the call returns at once.
void mark_written(cublasHandle_t handle, const void* c, std::size_t bytes) {
  cudaStream_t stream = nullptr;
  MOE_CHECK(Cublas, cublasGetStream(handle, &stream));
  mark_written_on(stream, c, bytes);
}

// The bytes of a row-major rows × cols matrix of `element` bytes with leading dimension ld.
std::size_t matrix_bytes(std::int64_t rows, std::int64_t cols, std::int64_t ld, std::size_t element) {
  return static_cast<std::size_t>((rows - 1) * ld + cols) * element;
}

// C = beta · C + the slices' partial products, a thread per element (split_k.cuh).
__global__ void split_k_sum_kernel(const float* partials, int slices, std::int64_t m, std::int64_t n, float beta,
                                   float* c, std::int64_t ldc) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t e = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; e < m * n; e += stride) {
    const std::int64_t i = e / n, j = e % n;
    c[i * ldc + j] = split_k_element(partials, slices, m, n, i, j, beta, c, ldc);
  }
}

}  // namespace

void mark_written_on(cudaStream_t stream, const void* c, std::size_t bytes) {
  static const nvtxDomainHandle_t domain = nvtxDomainCreateA("moe");
  nvtxMemVirtualRangeDesc_t range{bytes, c};
  nvtxMemMarkInitializedBatch_t batch{};
  batch.extCompatID = NVTX_EXT_COMPATID_MEM;
  batch.structSize = sizeof(batch);
  batch.regionType = NVTX_MEM_TYPE_VIRTUAL_ADDRESS;
  batch.regionDescCount = 1;
  batch.regionDescElementSize = sizeof(range);
  batch.regionDescElements = &range;
  nvtxMemCudaMarkInitialized(domain, stream, 0, &batch);
}

bool gemm_epilogue_from_environment() {
  return switch_from_environment("MOE_GEMM_EPILOGUE", false, "CudaOps",
                                 "the experts' first product adds the bias and applies ReLU in cuBLASLt's epilogue");
}

int gemm_lanes_from_environment() {
  const char* asked = std::getenv("MOE_GEMM_STREAMS");
  if (!asked || !*asked) return kDefaultGemmLanes;
  char* end = nullptr;
  const long lanes = std::strtol(asked, &end, 10);
  MOE_CHECK_ARG(*end == '\0' && lanes >= 1 && lanes <= kMaxGemmLanes, "grouped GEMM", "MOE_GEMM_STREAMS = '", asked,
                "'; expected a count of streams from 1 to ", kMaxGemmLanes, ", or unset (", kDefaultGemmLanes, ")");
  return static_cast<int>(lanes);
}

bool gemm_sm_share_from_environment() {
  return switch_from_environment("MOE_GEMM_SM_SHARE", false, "grouped GEMM",
                                 "each GEMM stream's cuBLAS handle plans for its share of the SMs");
}

bool gemm_split_k_from_environment() {
  return switch_from_environment("MOE_GEMM_SPLIT_K", true, "gemm", "thin products split over K");
}

bool bias_gradient_sums_in_epilogue_from_environment() {
  return switch_from_environment("MOE_BIAS_GRADIENT_SUMS_IN_EPILOGUE", false, "CudaOps",
                                 "the input biases' gradients summed as the epilogue's backward writes dz");
}

GemmLanes::GemmLanes(int lanes, cudaStream_t main, cublasHandle_t main_handle, bool share_sms)
    : main_(main), main_handle_(main_handle) {
  MOE_CHECK_ARG(lanes >= 1 && lanes <= kMaxGemmLanes, "GemmLanes", "lanes = ", lanes, "; expected 1 to ", kMaxGemmLanes);
  if (lanes == 1) {
    handles_.push_back(main_handle);
    return;
  }
  try {
    int sm_share = 0;  // 0: cuBLAS plans for the whole GPU
    if (share_sms) {
      int device = 0, sms = 0;
      MOE_CHECK(Cuda, cudaGetDevice(&device));
      MOE_CHECK(Cuda, cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
      sm_share = (sms + lanes - 1) / lanes;
    }
    MOE_CHECK(Cuda, cudaEventCreateWithFlags(&forked_, cudaEventDisableTiming));
    int priority = 0;  // the main stream's (LayerOptions::high_priority)
    MOE_CHECK(Cuda, cudaStreamGetPriority(main, &priority));
    for (int i = 0; i < lanes; ++i) {
      streams_.push_back(nullptr);
      MOE_CHECK(Cuda, cudaStreamCreateWithPriority(&streams_.back(), cudaStreamNonBlocking, priority));
      handles_.push_back(nullptr);
      MOE_CHECK(Cublas, cublasCreate(&handles_.back()));
      MOE_CHECK(Cublas, cublasSetStream(handles_.back(), streams_.back()));
      if (sm_share > 0) MOE_CHECK(Cublas, cublasSetSmCountTarget(handles_.back(), sm_share));
      done_.push_back(nullptr);
      MOE_CHECK(Cuda, cudaEventCreateWithFlags(&done_.back(), cudaEventDisableTiming));
    }
  } catch (...) {
    release();
    throw;
  }
}

GemmLanes::~GemmLanes() { release(); }

void GemmLanes::release() noexcept {
  // Never throws: failures are reported and the rest is still released.
  for (cudaStream_t s : streams_)
    if (s && cudaStreamSynchronize(s) != cudaSuccess) std::fprintf(stderr, "moe: a GEMM stream failed\n");
  if (!streams_.empty())  // else the one handle is the main stream's, not ours
    for (cublasHandle_t h : handles_)
      if (h && cublasDestroy(h) != CUBLAS_STATUS_SUCCESS) std::fprintf(stderr, "moe: cublasDestroy failed\n");
  for (cudaEvent_t e : done_)
    if (e && cudaEventDestroy(e) != cudaSuccess) std::fprintf(stderr, "moe: cudaEventDestroy failed\n");
  if (forked_ && cudaEventDestroy(forked_) != cudaSuccess) std::fprintf(stderr, "moe: cudaEventDestroy failed\n");
  for (cudaStream_t s : streams_)
    if (s && cudaStreamDestroy(s) != cudaSuccess) std::fprintf(stderr, "moe: cudaStreamDestroy failed\n");
  streams_.clear(), handles_.clear(), done_.clear(), forked_ = nullptr;
}

int GemmLanes::priority() const {
  int priority = 0;
  MOE_CHECK(Cuda, cudaStreamGetPriority(main_, &priority));
  for (cudaStream_t s : streams_) {
    int lane = 0;
    MOE_CHECK(Cuda, cudaStreamGetPriority(s, &lane));
    MOE_CHECK_ARG(lane == priority, "GemmLanes", "a lane's stream priority = ", lane, "; expected the main stream's, ",
                  priority);
  }
  return priority;
}

void GemmLanes::fork() {
  if (streams_.empty()) return;
  MOE_CHECK(Cuda, cudaEventRecord(forked_, main_));
  for (cudaStream_t s : streams_) MOE_CHECK(Cuda, cudaStreamWaitEvent(s, forked_, 0));
}

void GemmLanes::join() {
  for (std::size_t i = 0; i < streams_.size(); ++i) {
    MOE_CHECK(Cuda, cudaEventRecord(done_[i], streams_[i]));
    MOE_CHECK(Cuda, cudaStreamWaitEvent(main_, done_[i], 0));
  }
}

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
  mark_written(handle, c, matrix_bytes(m, n, ldc, sizeof(float)));
}

namespace {

// The per-group arguments of cublasGemmGroupedBatchedEx, every group of one size (a
// group per problem): n, k (also the leading dimensions), 1 and 0 as α and β, and no
// transposes. One array of each type: GCC 12 warned (-Wfree-nonheap-object, a false
// positive) about eight vectors built side by side.
class OneLaunchShapes {
 public:
  OneLaunchShapes(int groups, int n, int k)
      : groups_(static_cast<std::size_t>(groups)), ints_(3 * groups_, 1), scalars_(2 * groups_, 1.0f),
        no_transpose_(groups_, CUBLAS_OP_N) {
    std::fill_n(ints_.begin(), groups_, n);
    std::fill_n(ints_.begin() + static_cast<std::ptrdiff_t>(groups_), groups_, k);
    std::fill_n(scalars_.begin() + static_cast<std::ptrdiff_t>(groups_), groups_, 0.0f);
  }
  const int* n() const { return ints_.data(); }
  const int* k() const { return ints_.data() + groups_; }
  const int* ones() const { return ints_.data() + 2 * groups_; }  // one problem per group
  const float* alpha() const { return scalars_.data(); }
  const float* beta() const { return scalars_.data() + groups_; }
  const cublasOperation_t* no_transpose() const { return no_transpose_.data(); }

 private:
  std::size_t groups_;
  std::vector<int> ints_;
  std::vector<float> scalars_;
  std::vector<cublasOperation_t> no_transpose_;
};

}  // namespace

void gemm_split_k(cublasHandle_t handle, GemmPrecision precision, bool trans_a, bool trans_b, std::int64_t m,
                  std::int64_t n, std::int64_t k, float alpha, const float* a, std::int64_t lda, const float* b,
                  std::int64_t ldb, float beta, float* c, std::int64_t ldc, int slices, float* partials) {
  MOE_CHECK_ARG(precision != GemmPrecision::BF16, "gemm_split_k", "precision = BF16; expected FP32 or TF32");
  if (slices <= 1 || m == 0 || n == 0) {
    gemm(handle, precision, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  MOE_CHECK_ARG(k % slices == 0, "gemm_split_k", "slices = ", slices, "; expected a divisor of k = ", k);
  const std::int64_t depth = k / slices;
  const SliceStrides strides = split_k_strides(trans_a, trans_b, depth, lda, ldb);
  const cublasComputeType_t compute =
      precision == GemmPrecision::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const float zero = 0.0f;
  // As gemm(): row-major Cᵀ = op(B)ᵀ·op(A)ᵀ column-major, here one product per slice.
  MOE_CHECK(Cublas, cublasGemmStridedBatchedEx_64(
                        handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, depth,
                        &alpha, b, CUDA_R_32F, ldb, strides.b, a, CUDA_R_32F, lda, strides.a, &zero, partials,
                        CUDA_R_32F, n, m * n, slices, compute, CUBLAS_GEMM_DEFAULT));
  mark_written(handle, partials, static_cast<std::size_t>(slices * m * n) * sizeof(float));
  cudaStream_t stream = nullptr;
  MOE_CHECK(Cublas, cublasGetStream(handle, &stream));
  split_k_sum_kernel<<<blocks_for(m * n, kBlock), kBlock, 0, stream>>>(partials, slices, m, n, beta, c, ldc);
  MOE_CHECK_LAUNCH();
}

GroupedGemmMethod grouped_gemm_method(const std::vector<int>& rows, GemmPrecision precision) {
  const bool equal_rows =
      rows.size() > 1 && std::all_of(rows.begin(), rows.end(), [&](int r) { return r == rows.front(); });
  if (const char* forced = std::getenv("MOE_GROUPED_GEMM"); forced && *forced) {
    if (std::strcmp(forced, "one_launch") == 0) return GroupedGemmMethod::OneLaunch;
    if (std::strcmp(forced, "per_group") == 0) return GroupedGemmMethod::PerGroup;
    const bool batched = std::strcmp(forced, "batched") == 0;
    MOE_CHECK_ARG(batched, "grouped GEMM", "MOE_GROUPED_GEMM = '", forced,
                  "'; expected one_launch, per_group, batched, or unset (chosen by size)");
    if (equal_rows) return GroupedGemmMethod::Batched;
  }
  // bf16 groups of one row count (experts padded): one batched launch. On an H200 it ran
  // the fine-grained and mid products at 0.91-0.94 of one dense product, where a launch
  // per expert ran at 0.59-0.80, and the Mixtral-like ones level with it
  // (bench/gemm_methods.cu, 2026-11-27; docs/performance.md). Float32 keeps the rule
  // below: batched was not measured there.
  if (equal_rows && precision == GemmPrecision::BF16) return GroupedGemmMethod::Batched;
  long long total = 0;
  for (int r : rows) total += r;
  return rows.empty() || total / static_cast<long long>(rows.size()) >= kPerGroupMinMeanRows
             ? GroupedGemmMethod::PerGroup
             : GroupedGemmMethod::OneLaunch;
}

void grouped_gemm(GemmLanes& lanes, GemmPrecision precision, const std::vector<int>& rows, int n, int k,
                  const GroupedOperands& operands) {
  const int groups = static_cast<int>(rows.size());
  if (groups == 0) return;
  const cublasComputeType_t compute =
      precision == GemmPrecision::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const cudaDataType_t type = precision == GemmPrecision::BF16 ? CUDA_R_16BF : CUDA_R_32F;
  const std::size_t element = precision == GemmPrecision::BF16 ? 2 : 4;
  const float one = 1.0f, zero = 0.0f;
  const GroupedGemmMethod method = grouped_gemm_method(rows, precision);
  if (method == GroupedGemmMethod::Batched) {
    // Every group rows[0] × n: C_gᵀ (n × rows) = B_gᵀ · A_gᵀ, column-major, one launch.
    cublasHandle_t handle = lanes.main_handle();
    const int m = rows.front();
    MOE_CHECK(Cublas, cublasGemmBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &one, operands.b_device, type, n,
                                          operands.a_device, type, k, &zero, operands.c_device, type, n, groups,
                                          compute, CUBLAS_GEMM_DEFAULT));
    for (int g = 0; g < groups; ++g) mark_written(handle, operands.c_host[g], matrix_bytes(m, n, n, element));
    return;
  }
  if (method == GroupedGemmMethod::PerGroup) {
    // Column-major per group: C_gᵀ (n × rows_g) = B_gᵀ (n × k) · A_gᵀ (k × rows_g).
    // Group g on lane g mod lanes; a lone group on the main stream.
    const int used = std::min(lanes.count(), groups);
    if (used > 1) lanes.fork();
    for (int g = 0; g < groups; ++g) {
      cublasHandle_t handle = used > 1 ? lanes.handle(g % used) : lanes.main_handle();
      const int m = rows[static_cast<std::size_t>(g)];
      MOE_CHECK(Cublas, cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &one, operands.b_host[g], type, n,
                                     operands.a_host[g], type, k, &zero, operands.c_host[g], type, n, compute,
                                     CUBLAS_GEMM_DEFAULT));
      mark_written(handle, operands.c_host[g], matrix_bytes(m, n, n, element));
    }
    if (used > 1) lanes.join();
    return;
  }
  cublasHandle_t handle = lanes.main_handle();
  const OneLaunchShapes shapes(groups, n, k);
  MOE_CHECK(Cublas, cublasGemmGroupedBatchedEx(handle, shapes.no_transpose(), shapes.no_transpose(), shapes.n(),
                                               rows.data(), shapes.k(), shapes.alpha(), operands.b_device, type,
                                               shapes.n(), operands.a_device, type, shapes.k(), shapes.beta(),
                                               operands.c_device, type, shapes.n(), groups, shapes.ones(), compute));
  for (int g = 0; g < groups; ++g)
    mark_written(handle, operands.c_host[g], matrix_bytes(rows[static_cast<std::size_t>(g)], n, n, element));
}

}  // namespace moe::kernels::cuda
