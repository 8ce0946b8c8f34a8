// Optimizers for an MoELayer: state kept next to the parameters it updates — sharded
// with the experts, replicated with the gate — and gradient clipping by the global
// norm over every rank.
#pragma once

#include <cstdint>
#include <memory>

#include "moe/layer.hpp"

namespace moe {

namespace detail {
struct OptimizerAccess;
}

struct SGDOptions {
  float lr = 0.01f;
  float momentum = 0.9f;      // buf = momentum · buf + grad; param -= lr · buf
  float weight_decay = 0.0f;  // decoupled: param -= lr · weight_decay · param
};

struct AdamWOptions {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;  // decoupled (Loshchilov & Hutter)
};

enum class OptimizerType { SGD, AdamW };
const char* optimizer_name(OptimizerType type);

class Optimizer {
 public:
  // The layer must outlive the optimizer. Options are checked (lr > 0, 0 ≤ betas < 1,
  // eps > 0, weight_decay ≥ 0, 0 ≤ momentum < 1).
  static Optimizer sgd(MoELayer& layer, SGDOptions options = {});
  static Optimizer adamw(MoELayer& layer, AdamWOptions options = {});
  ~Optimizer();
  Optimizer(Optimizer&&) noexcept;
  Optimizer& operator=(Optimizer&&) noexcept;

  // One update of every parameter of the layer from its gradients. Local: each rank
  // updates its experts and its replica of the gate (identical on every rank, since
  // the gate's gradient is summed over ranks).
  void step();
  std::int64_t step_count() const;
  OptimizerType type() const;
  float learning_rate() const;
  void set_learning_rate(float lr);

 private:
  friend struct detail::OptimizerAccess;
  struct Impl;
  explicit Optimizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Collective. The L2 norm of all the layer's gradients — every expert on every rank
// exactly once, and the replicated gate once (not once per rank) — and, when it
// exceeds max_norm, every gradient scaled by max_norm / norm. Returns the norm before
// clipping. max_norm <= 0 only measures; NaN is an error.
double clip_grad_norm(MoELayer& layer, double max_norm);

}  // namespace moe
