#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/plan.cuh"

namespace moe::kernels::cuda {
namespace {

// Thread i of n (grid-stride) does step(p, i).
template <class Step>
__global__ void step_kernel(plan::PlanArrays p, std::int64_t n, Step step) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n; i += stride) step(p, i);
}

}  // namespace

// A kernel per step, in plan::for_each_plan_step's order: each sees the one before
// finished, because they share the stream.
void launch_single_rank_plan(const plan::PlanArrays& p, Stream stream) {
  plan::for_each_plan_step(p, [&](std::int64_t n, auto step) {
    if (n <= 0) return;
    const std::int64_t blocks = (n + kBlock - 1) / kBlock;
    step_kernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kBlock, 0, stream>>>(p, n, step);
    MOE_CHECK_LAUNCH();
  });
}

}  // namespace moe::kernels::cuda
