#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/reductions.cuh"

namespace moe::kernels::cuda {
namespace {

__global__ void column_sums_kernel(const float* m, std::int64_t rows, std::int64_t cols, double* sums) {
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (c < cols) sums[c] = column_sum(m, rows, cols, c);
}

__global__ void add_column_sums_kernel(const float* m, std::int64_t rows, std::int64_t cols, float* sums) {
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (c < cols) sums[c] += static_cast<float>(column_sum(m, rows, cols, c));
}

constexpr std::int64_t kPerBlock = std::int64_t{1} << 16;

__global__ void sum_squares_kernel(const float* x, std::int64_t n, double* partials) {
  __shared__ double partial[kBlock];
  const std::int64_t begin = blockIdx.x * kPerBlock;
  const std::int64_t end = begin + kPerBlock < n ? begin + kPerBlock : n;
  double sum = 0.0;
  for (std::int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) sum += double(x[i]) * double(x[i]);
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = partial[0];
}

}  // namespace

void launch_column_sums(const float* m, std::int64_t rows, std::int64_t cols, double* sums, Stream stream) {
  if (cols == 0) return;
  column_sums_kernel<<<blocks_for(cols, kBlock), kBlock, 0, stream>>>(m, rows, cols, sums);
  MOE_CHECK_LAUNCH();
}

void launch_add_column_sums(const float* m, std::int64_t rows, std::int64_t cols, float* sums, Stream stream) {
  if (cols == 0) return;
  add_column_sums_kernel<<<blocks_for(cols, kBlock), kBlock, 0, stream>>>(m, rows, cols, sums);
  MOE_CHECK_LAUNCH();
}

int sum_squares_blocks(std::int64_t n) { return static_cast<int>((n + kPerBlock - 1) / kPerBlock); }

void launch_sum_squares(const float* x, std::int64_t n, double* partials, Stream stream) {
  const int blocks = sum_squares_blocks(n);
  if (blocks == 0) return;
  sum_squares_kernel<<<blocks, kBlock, 0, stream>>>(x, n, partials);
  MOE_CHECK_LAUNCH();
}

}  // namespace moe::kernels::cuda
