// An on/off switch from the environment, for the trials the prepared GPU check compares
// (the CUDA ops' in kernels/cuda/environment.cuh, moe train's student priority): host
// code, shared by the CPU and CUDA builds.
#pragma once

#include <cstdlib>
#include <cstring>

#include "moe/error.hpp"

namespace moe::kernels {

// 1 or 0, unset or empty for `by_default`; anything else is an error from `where`
// naming the variable, its value and what 1 does.
inline bool switch_from_environment(const char* variable, bool by_default, const char* where, const char* what_on) {
  const char* asked = std::getenv(variable);
  if (!asked || !*asked) return by_default;
  const bool on = std::strcmp(asked, "1") == 0;
  MOE_CHECK_ARG(on || std::strcmp(asked, "0") == 0, where, variable, " = '", asked, "'; expected 1 (", what_on,
                "), 0, or unset (", by_default ? 1 : 0, ")");
  return on;
}

}  // namespace moe::kernels
