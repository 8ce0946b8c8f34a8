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

// A kernel per step, in the steps' order: each sees the one before finished, because
// they share the stream.
template <class Arrays>
struct LaunchOnStream {
  const Arrays& arrays;
  Stream stream;
  template <class Step>
  void operator()(std::int64_t n, Step step) const {
    if (n <= 0) return;
    const std::int64_t blocks = (n + kBlock - 1) / kBlock;
    step_kernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kBlock, 0, stream>>>(arrays, n, step);
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
