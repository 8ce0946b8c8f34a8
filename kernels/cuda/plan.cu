#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/plan.cuh"

namespace moe::kernels::cuda {
namespace {

// Thread i of n (grid-stride) does step(p, i).
template <class Arrays, class Step>
__global__ void step_kernel(Arrays p, std::int64_t n, Step step) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n; i += stride) step(p, i);
}

// A count step (plan::ChunkCount) a block per chunk (striding when chunks exceed the
// grid): the chunk's keys are read once into shared memory, then each thread counts
// one key there, where a thread per (key, chunk) would read the chunk from global
// memory once per key. The counts are the same.
template <class Arrays, class Count>
__global__ void chunk_count_kernel(Arrays p, Count) {
  __shared__ std::int32_t chunk_keys[plan::kChunk];
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

// A kernel per step, in the steps' order: each sees the one before finished, because
// they share the stream.
template <class Arrays>
struct LaunchOnStream {
  const Arrays& arrays;
  Stream stream;
  template <class Step>
  void operator()(std::int64_t n, Step step) const {
    if (n <= 0) return;
    if constexpr (plan::is_chunk_count<Step>::value) {
      const std::int64_t chunks = plan::chunk_count(Step::items(arrays));
      chunk_count_kernel<<<static_cast<unsigned>(chunks < 65535 ? chunks : 65535), kBlock, 0, stream>>>(arrays, step);
    } else {
      const std::int64_t blocks = (n + kBlock - 1) / kBlock;
      step_kernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kBlock, 0, stream>>>(arrays, n, step);
    }
    MOE_CHECK_LAUNCH();
  }
};

}  // namespace

void launch_single_rank_plan(const plan::PlanArrays& p, Stream stream) {
  plan::for_each_plan_step(p, LaunchOnStream<plan::PlanArrays>{p, stream});
}

void launch_send_plan(const plan::SendPlanArrays& s, Stream stream) {
  plan::for_each_send_plan_step(s, LaunchOnStream<plan::SendPlanArrays>{s, stream});
}

void launch_receive_plan(const plan::ReceivePlanArrays& r, Stream stream) {
  plan::for_each_receive_plan_step(r, LaunchOnStream<plan::ReceivePlanArrays>{r, stream});
}

}  // namespace moe::kernels::cuda
