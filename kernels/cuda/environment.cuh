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

}  // namespace moe::kernels::cuda
