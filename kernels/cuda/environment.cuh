// The CUDA ops' switches from the environment: the trials the prepared GPU check
// compares (docs/design.md §4b), read once when the ops are made.
#pragma once

#include <cstdlib>
#include <cstring>

#include "moe/error.hpp"

namespace moe::kernels::cuda {

// An on/off switch: 1 or 0, unset or empty for `by_default`; anything else is an error
// naming the variable, its value and what 1 does.
inline bool switch_from_environment(const char* variable, bool by_default, const char* where, const char* what_on) {
  const char* asked = std::getenv(variable);
  if (!asked || !*asked) return by_default;
  const bool on = std::strcmp(asked, "1") == 0;
  MOE_CHECK_ARG(on || std::strcmp(asked, "0") == 0, where, variable, " = '", asked, "'; expected 1 (", what_on,
                "), 0, or unset (", by_default ? 1 : 0, ")");
  return on;
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
