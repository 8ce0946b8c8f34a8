// The library's own access to a layer's parameter storage (checkpoints, optimizers),
// without copies: the gate [H, E] and this rank's experts, tensor by tensor.
#pragma once

#include "buffer.hpp"
#include "expert_storage.hpp"
#include "moe/layer.hpp"

namespace moe::detail {

struct LayerAccess {
  // In the layer's ops' memory (host for the CPU backend, device for CUDA).
  static ExpertStorage& experts(MoELayer& layer);
  static const ExpertStorage& experts(const MoELayer& layer);
  // The gradients, in the same layouts.
  static Buffer<float>& gate_grad(MoELayer& layer);
  static ExpertStorage& expert_grads(MoELayer& layer);
  static Buffer<float>& gate_buffer(MoELayer& layer);
  static kernels::Ops& ops(MoELayer& layer);
};

}  // namespace moe::detail
