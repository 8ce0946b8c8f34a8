// The library's own access to an optimizer's state (for checkpoints): each state
// set is a ParameterSet shaped as the layer's parameters.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "buffer.hpp"
#include "parameter_set.hpp"
#include "moe/optimizer.hpp"

namespace moe::detail {

struct OptimizerState {
  std::string name;  // "momentum", "exp_avg", "exp_avg_sq"
  ParameterSet* values;
};

struct OptimizerAccess {
  static std::vector<OptimizerState> state(Optimizer& optimizer);
  static std::map<std::string, double> hyperparameters(const Optimizer& optimizer);
  // Restores what a checkpoint holds (the hyperparameters must be known names).
  static void restore(Optimizer& optimizer, std::int64_t steps, const std::map<std::string, double>& hyperparameters);
  static MoELayer& layer(Optimizer& optimizer);
};

}  // namespace moe::detail
