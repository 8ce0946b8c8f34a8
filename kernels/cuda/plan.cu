#include <cooperative_groups.h>

#include <algorithm>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/environment.cuh"
#include "kernels/cuda/plan.cuh"

namespace moe::kernels::cuda {
namespace {

// Thread i of n (grid-stride) does step(p, i).
template <class Arrays, class Step>
__device__ void each_element(const Arrays& p, std::int64_t n, Step step) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n; i += stride) step(p, i);
}

// A count step (plan::ChunkCount) a block per chunk (striding when chunks exceed the
// grid): the chunk's keys are read once into shared memory (kChunk of them), then each
// thread counts one key there, where a thread per (key, chunk) would read the chunk from
// global memory once per key. The counts are the same.
template <class Arrays, class Count>
__device__ void count_chunks(const Arrays& p, std::int32_t* chunk_keys) {
  const auto key_of = Count::key(p);
  const std::int64_t items = Count::items(p), keys = Count::keys(p), chunks = plan::chunk_count(items);
  std::int32_t* counts = Count::counts(p);
  for (std::int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const std::int64_t begin = chunk * plan::kChunk;
    const int n = static_cast<int>(items - begin < plan::kChunk ? items - begin : plan::kChunk);
    __syncthreads();  // the previous chunk's keys have been counted
    for (int j = static_cast<int>(threadIdx.x); j < n; j += blockDim.x) chunk_keys[j] = key_of(begin + j);
    __syncthreads();
    for (std::int64_t key = threadIdx.x; key < keys; key += blockDim.x) {
      std::int32_t count = 0;
      for (int j = 0; j < n; ++j) count += chunk_keys[j] == key ? 1 : 0;
      counts[key * chunks + chunk] = count;
    }
  }
}

template <class Arrays, class Step>
__global__ void step_kernel(Arrays p, std::int64_t n, Step step) {
  each_element(p, n, step);
}

template <class Arrays, class Count>
__global__ void chunk_count_kernel(Arrays p, Count) {
  __shared__ std::int32_t chunk_keys[plan::kChunk];
  count_chunks<Arrays, Count>(p, chunk_keys);
}

// The blocks a step can keep busy: a block per chunk for a count, else a thread per
// element.
template <class Arrays, class Step>
std::int64_t blocks_for_step(const Arrays& p, std::int64_t n) {
  if constexpr (plan::is_chunk_count<Step>::value) return plan::chunk_count(Step::items(p));
  return (n + kBlock - 1) / kBlock;
}

// A kernel per step, in the steps' order: each sees the one before finished, because
// they share the stream.
template <class Arrays>
struct LaunchOnStream {
  const Arrays& arrays;
  Stream stream;
  template <class Step>
  void operator()(std::int64_t n, Step step) const {
    if (n <= 0) return;
    const auto blocks = static_cast<unsigned>(std::min<std::int64_t>(blocks_for_step<Arrays, Step>(arrays, n), 65535));
    if constexpr (plan::is_chunk_count<Step>::value)
      chunk_count_kernel<<<blocks, kBlock, 0, stream>>>(arrays, step);
    else
      step_kernel<<<blocks, kBlock, 0, stream>>>(arrays, n, step);
    MOE_CHECK_LAUNCH();
  }
};

// The steps of each plan, as a type the one kernel takes.
struct SingleRankSteps {
  MOE_HD_CALLS_ARGUMENT
  template <class Run>
  MOE_HD static void each(const plan::PlanArrays& p, Run&& run) { plan::for_each_plan_step(p, run); }
};
struct SendSteps {
  MOE_HD_CALLS_ARGUMENT
  template <class Run>
  MOE_HD static void each(const plan::SendPlanArrays& s, Run&& run) { plan::for_each_send_plan_step(s, run); }
};
struct ReceiveSteps {
  MOE_HD_CALLS_ARGUMENT
  template <class Run>
  MOE_HD static void each(const plan::ReceivePlanArrays& r, Run&& run) {
    plan::for_each_receive_plan_step(r, run);
  }
};

// Inside the one kernel: every block does its share of a step, then waits at the
// grid-wide barrier, which also makes the step's writes visible to every block (as the
// end of a kernel does). Every thread sees the same step counts (they come from the
// arrays' sizes, not from what a step wrote), so all reach each barrier.
template <class Arrays>
struct RunInGrid {
  const Arrays& arrays;
  std::int32_t* chunk_keys;
  template <class Step>
  __device__ void operator()(std::int64_t n, Step step) const {
    if (n <= 0) return;
    if constexpr (plan::is_chunk_count<Step>::value)
      count_chunks<Arrays, Step>(arrays, chunk_keys);
    else
      each_element(arrays, n, step);
    cooperative_groups::this_grid().sync();
  }
};

template <class Steps, class Arrays>
__global__ void __launch_bounds__(kBlock) plan_in_one_kernel(Arrays p) {
  __shared__ std::int32_t chunk_keys[plan::kChunk];
  Steps::each(p, RunInGrid<Arrays>{p, chunk_keys});
}

// One cooperative launch: as many blocks as the widest step can use, at most as many as
// fit on the device at once (a cooperative grid must all be resident). False, having
// launched nothing, where no block of it fits (the caller then launches a kernel per step).
template <class Steps, class Arrays>
bool launch_in_one_kernel(const Arrays& p, const PlanLaunch& launch) {
  std::int64_t widest = 0;
  Steps::each(p, [&](std::int64_t n, auto step) {
    if (n > 0) widest = std::max(widest, blocks_for_step<Arrays, decltype(step)>(p, n));
  });
  if (widest == 0) return true;
  static const int per_multiprocessor = [] {
    int blocks = 0;
    MOE_CHECK(Cuda, cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, plan_in_one_kernel<Steps, Arrays>,
                                                                  kBlock, 0));
    return blocks;
  }();
  const std::int64_t resident = static_cast<std::int64_t>(per_multiprocessor) * launch.multiprocessors;
  if (resident == 0) return false;
  Arrays arrays = p;
  void* arguments[] = {&arrays};
  // Any grid of at least one block computes the plan (each step strides over its
  // elements). A tool that instruments the kernel (compute-sanitizer) may fit fewer
  // blocks than the occupancy query says: then half as many, until they fit.
  for (auto blocks = static_cast<unsigned>(std::min(widest, resident));; blocks = (blocks + 1) / 2) {
    const cudaError_t status = cudaLaunchCooperativeKernel(
        reinterpret_cast<const void*>(&plan_in_one_kernel<Steps, Arrays>), dim3(blocks), dim3(kBlock), arguments, 0,
        launch.stream);
    if (status != cudaErrorCooperativeLaunchTooLarge || blocks == 1) {
      MOE_CHECK(Cuda, status);
      return true;
    }
    (void)cudaGetLastError();  // clears the refusal
  }
}

template <class Steps, class Arrays>
void launch_plan(const Arrays& p, const PlanLaunch& launch, bool one_kernel) {
  if (one_kernel && launch_in_one_kernel<Steps>(p, launch)) return;
  Steps::each(p, LaunchOnStream<Arrays>{p, launch.stream});
}

}  // namespace

void launch_single_rank_plan(const plan::PlanArrays& p, const PlanLaunch& launch) {
  launch_plan<SingleRankSteps>(p, launch, launch.one_kernel);
}

void launch_send_plan(const plan::SendPlanArrays& s, const PlanLaunch& launch) {
  launch_plan<SendSteps>(s, launch, launch.exchange_one_kernel);
}

void launch_receive_plan(const plan::ReceivePlanArrays& r, const PlanLaunch& launch) {
  launch_plan<ReceiveSteps>(r, launch, launch.exchange_one_kernel);
}

void plan_in_one_kernel_from_environment(PlanLaunch& launch) {
  const PlansInOneKernel asked = plans_in_one_kernel_from_environment();
  launch.one_kernel = asked.single_rank, launch.exchange_one_kernel = asked.distributed;
}

}  // namespace moe::kernels::cuda
