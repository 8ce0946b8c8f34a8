// The library's own access to a layer's parameter storage (checkpoints, optimizers),
// without copies: [H, E] for the gate and [local experts, 2HF + F + H] for the
// experts, each expert in the flat layout [W1, W2, b1, b2].
#pragma once

#include "moe/layer.hpp"

namespace moe::detail {

struct LayerAccess {
  // Host memory: the layer's own buffers on the CPU backend.
  static float* gate(MoELayer& layer);
  static const float* gate(const MoELayer& layer);
  static float* experts(MoELayer& layer);
  static const float* experts(const MoELayer& layer);
};

}  // namespace moe::detail
