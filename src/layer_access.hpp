// The library's own access to a layer's storage (checkpoints, optimizers), without
// copies, in the layer's ops' memory (host for the CPU backend, device for CUDA).
#pragma once

#include <cstdint>
#include <vector>

#include "buffer.hpp"
#include "moe/layer.hpp"
#include "parameter_set.hpp"

namespace moe::detail {

struct LayerAccess {
  static ParameterSet& params(MoELayer& layer);
  static ParameterSet& grads(MoELayer& layer);
  // The sigmoid router's expert bias [E] and its host copy (empty otherwise); a
  // writer of one must write the other.
  static Buffer<float>& expert_bias(MoELayer& layer);
  static std::vector<float>& host_expert_bias(MoELayer& layer);
  static kernels::Ops& ops(MoELayer& layer);
  // Whether the layer's forwards pad each expert to the most rows kept (the padded
  // layout, docs/design.md §4b), as chosen when it was built.
  static bool pads_experts(MoELayer& layer);
  // How the layer's speculated rows fared (MOE_SPECULATIVE_ROWS, docs/design.md §4b):
  // forwards whose guessed layout the plan kept, and those it did not.
  struct Speculation {
    std::int64_t hits = 0, misses = 0;
    std::int64_t last_rows = 0;  // the last guess: rows per expert
  };
  static Speculation speculation(MoELayer& layer);
};

}  // namespace moe::detail
