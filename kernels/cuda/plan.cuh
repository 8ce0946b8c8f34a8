// The dispatch plan on the GPU: the steps of kernels/plan_steps.hpp (one rank) and
// kernels/exchange_plan_steps.hpp (P > 1: the sender's and the owner's halves), one
// thread per step's element, in the steps' order on a stream.
#pragma once

#include "kernels/cuda/stream.cuh"
#include "kernels/exchange_plan_steps.hpp"
#include "kernels/plan_steps.hpp"

namespace moe::kernels::cuda {

// How a plan's steps are launched: a kernel per step, or every step in one cooperative
// kernel whose blocks wait for each other between steps (a grid-wide barrier), so that a
// plan costs the host one launch where it cost up to 17. A device on which no block of
// the one kernel fits gets a kernel per step. The same functions run in the same order,
// so the results are the same integers (tests/cuda/test_cuda_ops.cpp,
// tests/cuda/test_cuda_layer.cpp).
// - The single-rank plan: one kernel by default. The sixth GPU check's mid forward spent
//   94-124 µs in its route phase for about 45 µs of kernels, bound by the host's
//   launches; the seventh (H200, 2026-11-28, two runs, each alternating twice) timed
//   the one kernel at 0.968 and 0.945 of the per-step launches at mid with a capacity
//   (both pairs agreeing in both runs), 0.937 and 0.951 at T = 8, and 0.977 and 1.000
//   dropless.
// - The distributed halves (P > 1): a kernel per step by default. The one kernel's
//   only timing there is two ranks sharing one GPU over MPI (moe_dist_bench, seventh
//   check), where the route phase took 0.851 ms with it against 0.470 without, in
//   two runs of different code: a cooperative grid must have the device to itself,
//   which a second process's kernels contend for. On a GPU of its own it is unmeasured.
struct PlanLaunch {
  Stream stream;
  bool one_kernel = true;            // the single-rank plan
  bool exchange_one_kernel = false;  // the distributed halves
  int multiprocessors = 0;           // the device's, to size the cooperative grid
};

// Every step of the plan over the arrays (device memory), queued on launch.stream.
void launch_single_rank_plan(const plan::PlanArrays& p, const PlanLaunch& launch);
void launch_send_plan(const plan::SendPlanArrays& s, const PlanLaunch& launch);
void launch_receive_plan(const plan::ReceivePlanArrays& r, const PlanLaunch& launch);

// MOE_PLAN_IN_ONE_KERNEL: 1, every plan in one kernel; 0, none; unset, the single-rank
// plan alone (the defaults above); anything else is an error naming it. Sets the two
// switches of `launch` (environment.cuh's plans_in_one_kernel_from_environment, tested
// on the CPU).
void plan_in_one_kernel_from_environment(PlanLaunch& launch);

}  // namespace moe::kernels::cuda
