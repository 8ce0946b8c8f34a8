// The optimizer updates, per element, shared by every backend.
#pragma once

#include <cmath>

#include "kernels/host_device.hpp"

namespace moe::kernels {

// SGD with momentum (PyTorch's form: buf = μ·buf + g; p −= lr·buf) and decoupled
// weight decay (p −= lr·wd·p, applied before the gradient step).
MOE_HD inline void sgd_element(float& param, float grad, float& momentum, float lr, float mu,
                               float weight_decay) {
  param -= lr * weight_decay * param;
  momentum = mu * momentum + grad;
  param -= lr * momentum;
}

// AdamW (Loshchilov & Hutter): m = β1·m + (1−β1)·g, v = β2·v + (1−β2)·g²,
// p −= lr·(wd·p + (m / c1) / (√(v / c2) + ε)) with c = 1 − βᵗ.
MOE_HD inline void adamw_element(float& param, float grad, float& m, float& v, float lr,
                                 float beta1, float beta2, float eps, float weight_decay,
                                 float correction1, float correction2) {
  m = beta1 * m + (1.0f - beta1) * grad;
  v = beta2 * v + (1.0f - beta2) * grad * grad;
  const float step = (m / correction1) / (sqrtf(v / correction2) + eps);
  param -= lr * (weight_decay * param + step);
}

}  // namespace moe::kernels
