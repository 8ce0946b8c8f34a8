// The single-rank dispatch plan on the GPU: the steps of kernels/plan_steps.hpp, one
// kernel per step and one thread per step's element, in the steps' order on a stream.
#pragma once

#include "kernels/cuda/stream.cuh"
#include "kernels/plan_steps.hpp"

namespace moe::kernels::cuda {

// Every step of the plan over p's arrays (device memory), queued on `stream`.
void launch_single_rank_plan(const plan::PlanArrays& p, Stream stream);

}  // namespace moe::kernels::cuda
