// The dispatch plan on the GPU: the steps of kernels/plan_steps.hpp (one rank) and
// kernels/exchange_plan_steps.hpp (P > 1: the sender's and the owner's halves), one
// thread per step's element, in the steps' order on a stream.
#pragma once

#include "kernels/cuda/stream.cuh"
#include "kernels/exchange_plan_steps.hpp"
#include "kernels/plan_steps.hpp"

namespace moe::kernels::cuda {

// How a plan's steps are launched. By default a kernel per step. With one_kernel, every
// step runs in one cooperative kernel whose blocks wait for each other between steps
// (a grid-wide barrier), so a plan costs the host one launch where it cost up to 17.
// The sixth GPU check's mid forward spent 94-124 µs in its route phase for about 45 µs
// of kernels (the plan's: 23 µs in 6 launches, dropless; 12 with a capacity), which
// looks bound by the host's launches; whether one launch helps is unmeasured. The same
// functions run in the same order, so the results are the same integers
// (tests/cuda/test_cuda_ops.cpp).
struct PlanLaunch {
  Stream stream;
  bool one_kernel = false;  // MOE_PLAN_IN_ONE_KERNEL=1: the trial
  int multiprocessors = 0;  // the device's, to size the cooperative grid
};

// Every step of the plan over the arrays (device memory), queued on launch.stream.
void launch_single_rank_plan(const plan::PlanArrays& p, const PlanLaunch& launch);
void launch_send_plan(const plan::SendPlanArrays& s, const PlanLaunch& launch);
void launch_receive_plan(const plan::ReceivePlanArrays& r, const PlanLaunch& launch);

// MOE_PLAN_IN_ONE_KERNEL: 1 or 0, unset for 0; anything else is an error naming it.
bool plan_in_one_kernel_from_environment();

}  // namespace moe::kernels::cuda
