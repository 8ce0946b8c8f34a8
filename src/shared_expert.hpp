// The shared expert (docs/design.md §1b): one expert of the layer's kind, applied to
// every token on the token's own rank and added to the routed output, optionally
// scaled by sigmoid(x·w_s). Its weights are replicated like the gate, so it needs no
// communication in the forward; the layer sums its gradients over ranks.
#pragma once

#include <cstdint>

#include "buffer.hpp"
#include "expert_compute.hpp"
#include "expert_storage.hpp"

namespace moe {

class SharedExpert {
 public:
  explicit SharedExpert(kernels::Ops& ops)
      : pre_(ops), hidden_(ops), y_(ops), gate_logit_(ops), d_y_(ops), d_hidden_(ops), d_pre_(ops), d_x_(ops),
        d_gate_logit_(ops) {}

  // out [T, H] += g · shared(x), g = sigmoid(x·w_s) with a gate (w_s [H] not null), else 1:
  // compute, then add_into.
  void forward(kernels::Ops& ops, const float* x, std::int64_t tokens, const ExpertStorage& expert,
               const float* gate, Activation activation, float* out);
  // The two halves, so that the expert can run before the routed output exists (the
  // layer queues it while the host waits for the routing): shared(x) and the gate's
  // logits into the expert's own buffers, then their sum into out, as forward adds it.
  void compute(kernels::Ops& ops, const float* x, std::int64_t tokens, const ExpertStorage& expert,
               const float* gate, Activation activation);
  void add_into(kernels::Ops& ops, std::int64_t tokens, std::int64_t hidden, float* out);
  // After forward on the same x: accumulates the expert's and the gate's gradients
  // (expert_grads, gate_grad may be null without a gate) and adds ∂L/∂x into dx.
  void backward(kernels::Ops& ops, const float* x, std::int64_t tokens, const float* d_out,
                const ExpertStorage& expert, const float* gate, Activation activation,
                ExpertStorage& expert_grads, float* gate_grad, float* dx);

 private:
  Buffer<float> pre_, hidden_, y_, gate_logit_;
  bool gated_ = false;  // the last compute's: whether gate_logit_ holds its logits
  Buffer<float> d_y_, d_hidden_, d_pre_, d_x_, d_gate_logit_;
};

}  // namespace moe
