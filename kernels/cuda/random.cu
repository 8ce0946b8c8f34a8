#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/random.cuh"
#include "kernels/random_stream.hpp"

namespace moe::kernels::cuda {
namespace {

__global__ void fill_normal_kernel(float* out, std::int64_t count, std::uint64_t start) {
  const std::int64_t pairs = (count + 1) / 2;
  for (std::int64_t p = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; p < pairs;
       p += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    normal_pair(start, static_cast<std::uint64_t>(p), out + 2 * p, 2 * p + 1 < count ? out + 2 * p + 1 : nullptr);
}

}  // namespace

void launch_fill_normal(float* out, std::int64_t count, std::uint64_t start, Stream stream) {
  if (count == 0) return;
  fill_normal_kernel<<<blocks_for((count + 1) / 2, kBlock), kBlock, 0, stream>>>(out, count, start);
  MOE_CHECK_LAUNCH();
}

}  // namespace moe::kernels::cuda
