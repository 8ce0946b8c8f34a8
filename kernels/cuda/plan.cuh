// The dispatch plan on the GPU: the steps of kernels/plan_steps.hpp (one rank) and
// kernels/exchange_plan_steps.hpp (P > 1: the sender's and the owner's halves), one
// kernel per step and one thread per step's element, in the steps' order on a stream.
#pragma once

#include "kernels/cuda/stream.cuh"
#include "kernels/exchange_plan_steps.hpp"
#include "kernels/plan_steps.hpp"

namespace moe::kernels::cuda {

// Every step of the plan over the arrays (device memory), queued on `stream`.
void launch_single_rank_plan(const plan::PlanArrays& p, Stream stream);
void launch_send_plan(const plan::SendPlanArrays& s, Stream stream);
void launch_receive_plan(const plan::ReceivePlanArrays& r, Stream stream);

}  // namespace moe::kernels::cuda
