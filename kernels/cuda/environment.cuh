// The CUDA ops' switches from the environment: the trials the prepared GPU check
// compares (docs/design.md §4b), read once when the ops are made.
#pragma once

#include <cstdlib>
#include <cstring>

#include "kernels/environment_switch.hpp"
#include "moe/error.hpp"

namespace moe::kernels::cuda {

// MOE_HIDDEN_EPILOGUE_BY_ELEMENT=1: the experts' hidden epilogue (launch_expert_hidden)
// runs a thread per 8 elements over every row, as its backward does, instead of a
// block per tile of 4 rows; 0 or unset: the tiles. A trial, off until a GPU check times
// it: the seventh (H200, 2026-11-28, ncu) had the tiles moving about 2.3 TB/s at the mid
// forward (expert_hidden_kernel, 62.8 µs for about 150 MB) while the backward's kernel,
// which strides over the elements, moved about 4.4 (65.4 µs for about 290 MB).
inline bool hidden_epilogue_by_element_from_environment() {
  return switch_from_environment("MOE_HIDDEN_EPILOGUE_BY_ELEMENT", false, "CudaOps",
                                 "the experts' hidden epilogue takes a thread per 8 elements over every row");
}

// MOE_PLAN_IN_ONE_KERNEL (kernels/cuda/plan.cuh says why these defaults): which dispatch
// plans launch their steps in one cooperative kernel. 1: every plan; 0: none; unset or
// empty: the single-rank plan, not the distributed halves; anything else is an error
// naming it. Host code: tests/unit/test_cuda_shared_logic.cpp holds it to that.
struct PlansInOneKernel {
  bool single_rank = true, distributed = false;
};
inline PlansInOneKernel plans_in_one_kernel_from_environment() {
  const char* asked = std::getenv("MOE_PLAN_IN_ONE_KERNEL");
  if (!asked || !*asked) return {};
  const bool on = std::strcmp(asked, "1") == 0;
  MOE_CHECK_ARG(on || std::strcmp(asked, "0") == 0, "CudaOps", "MOE_PLAN_IN_ONE_KERNEL = '", asked,
                "'; expected 1 (every dispatch plan's steps in one cooperative kernel), 0 (a kernel per step), or "
                "unset (the single-rank plan in one kernel, the distributed plan a kernel per step)");
  return {on, on};
}

}  // namespace moe::kernels::cuda
