#include <cstdlib>
#include <cstring>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/plan.cuh"
#include "moe/error.hpp"

namespace moe::kernels::cuda {
namespace {

// Thread i of n (grid-stride) does step(p, i).
template <class Step>
__global__ void step_kernel(plan::PlanArrays p, std::int64_t n, Step step) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n; i += stride) step(p, i);
}

// Every step in one block, a barrier between steps: one launch for the whole plan.
constexpr int kOneBlockThreads = 1024;
__global__ void __launch_bounds__(kOneBlockThreads) one_block_plan_kernel(plan::PlanArrays p) {
  plan::for_each_plan_step(p, [&](std::int64_t n, auto step) {
    for (std::int64_t i = threadIdx.x; i < n; i += blockDim.x) step(p, i);
    __syncthreads();  // the next step reads what this one wrote
  });
}

// A kernel per step is 13 launches. At the mid config on an H200 the steps added about
// 0.14 ms to the routing (2026-11-27), far more than their work, which suggests the
// launches, not the work, set the time. One block does a small plan in one launch, but
// its work, O(T·k·(E + kChunk)), is then on one multiprocessor: only up to these sizes
// (decode and the mid and Mixtral-like configs; not 64 experts with k = 8 at thousands
// of tokens). MOE_PLAN_LAUNCH=one_block|kernels forces either, for measuring both.
bool plan_in_one_block(const plan::PlanArrays& p) {
  if (const char* forced = std::getenv("MOE_PLAN_LAUNCH"); forced && *forced) {
    if (std::strcmp(forced, "one_block") == 0) return true;
    if (std::strcmp(forced, "kernels") == 0) return false;
    MOE_CHECK_ARG(false, "single-rank plan", "MOE_PLAN_LAUNCH = '", forced,
                  "'; expected one_block, kernels, or unset (chosen by size)");
  }
  return p.items() <= 16384 && p.items() * p.experts <= (std::int64_t{1} << 18);
}

}  // namespace

// A kernel per step, in plan::for_each_plan_step's order: each sees the one before
// finished, because they share the stream.
void launch_single_rank_plan(const plan::PlanArrays& p, Stream stream) {
  if (plan_in_one_block(p)) {
    one_block_plan_kernel<<<1, kOneBlockThreads, 0, stream>>>(p);
    MOE_CHECK_LAUNCH();
    return;
  }
  plan::for_each_plan_step(p, [&](std::int64_t n, auto step) {
    if (n <= 0) return;
    const std::int64_t blocks = (n + kBlock - 1) / kBlock;
    step_kernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kBlock, 0, stream>>>(p, n, step);
    MOE_CHECK_LAUNCH();
  });
}

}  // namespace moe::kernels::cuda
