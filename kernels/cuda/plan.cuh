// The dispatch plan on the GPU: the steps of kernels/plan_steps.hpp (one rank) and
// kernels/exchange_plan_steps.hpp (P > 1: the sender's and the owner's halves), one
// thread per step's element, in the steps' order on a stream.
#pragma once

#include "kernels/cuda/stream.cuh"
#include "kernels/exchange_plan_steps.hpp"
#include "kernels/plan_steps.hpp"

namespace moe::kernels::cuda {

// How a plan's steps are launched. By default every step runs in one cooperative kernel
// whose blocks wait for each other between steps (a grid-wide barrier), so a plan costs
// the host one launch where it cost up to 17; MOE_PLAN_IN_ONE_KERNEL=0 launches a kernel
// per step, as does a device on which no block of the one kernel fits. The sixth GPU
// check's mid forward spent 94-124 µs in its route phase for about 45 µs of kernels,
// bound by the host's launches; in the seventh (H200, 2026-11-28, alternated twice) the
// one kernel was faster in both pairs at mid with a capacity (0.968 of the time) and at
// T = 8 (0.937), and level dropless (0.977, the pairs disagreeing), so it became the
// default. The same functions run in the same order, so the results are the same
// integers (tests/cuda/test_cuda_ops.cpp, tests/cuda/test_cuda_layer.cpp).
struct PlanLaunch {
  Stream stream;
  bool one_kernel = true;  // MOE_PLAN_IN_ONE_KERNEL, unset or 1; 0 for a kernel per step
  int multiprocessors = 0;  // the device's, to size the cooperative grid
};

// Every step of the plan over the arrays (device memory), queued on launch.stream.
void launch_single_rank_plan(const plan::PlanArrays& p, const PlanLaunch& launch);
void launch_send_plan(const plan::SendPlanArrays& s, const PlanLaunch& launch);
void launch_receive_plan(const plan::ReceivePlanArrays& r, const PlanLaunch& launch);

// MOE_PLAN_IN_ONE_KERNEL: 1 or 0, unset for 1; anything else is an error naming it.
bool plan_in_one_kernel_from_environment();

}  // namespace moe::kernels::cuda
