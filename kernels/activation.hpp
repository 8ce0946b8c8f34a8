// The expert activations and their derivatives, per element, shared by every backend.
#pragma once

#include <cmath>

#include "kernels/host_device.hpp"

namespace moe::kernels {

enum class Act { Identity, ReLU, GELU, SiLU };

MOE_HD inline float activate(Act act, float z) {
  switch (act) {
    case Act::Identity: return z;
    case Act::ReLU: return z > 0.0f ? z : 0.0f;
    case Act::GELU: return 0.5f * z * (1.0f + erff(z * 0.70710678118654752f));
    case Act::SiLU: return z / (1.0f + expf(-z));
  }
  return z;
}

// d act(z) / dz.
MOE_HD inline float activate_grad(Act act, float z) {
  switch (act) {
    case Act::Identity: return 1.0f;
    case Act::ReLU: return z > 0.0f ? 1.0f : 0.0f;
    case Act::GELU: {
      const float cdf = 0.5f * (1.0f + erff(z * 0.70710678118654752f));
      const float pdf = 0.39894228040143268f * expf(-0.5f * z * z);
      return cdf + z * pdf;
    }
    case Act::SiLU: {
      const float s = 1.0f / (1.0f + expf(-z));
      return s * (1.0f + z * (1.0f - s));
    }
  }
  return 1.0f;
}

}  // namespace moe::kernels
