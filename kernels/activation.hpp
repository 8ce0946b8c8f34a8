// The expert activations and their derivatives, per element, shared by every backend;
// and the per-element logic of glu experts. NaN in gives NaN out for every activation
// (ReLU included: written so that a NaN fails the comparison and passes through).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/host_device.hpp"

namespace moe::kernels {

enum class Act { Identity, ReLU, GELU, SiLU, GELUTanh };

// √(2/π) and the cubic coefficient of the tanh approximation of GELU.
constexpr float kGeluTanhScale = 0.7978845608028654f;
constexpr float kGeluTanhCubic = 0.044715f;

MOE_HD inline float activate(Act act, float z) {
  switch (act) {
    case Act::Identity: return z;
    case Act::ReLU: return z < 0.0f ? 0.0f : z;  // NaN < 0 is false: NaN passes through
    // Φ(z) = ½·erfc(−z/√2): 1 + erf(z/√2) cancels for negative z (0 past z = −5).
    case Act::GELU: return 0.5f * z * erfcf(-z * 0.70710678118654752f);
    case Act::SiLU: return z / (1.0f + expf(-z));
    case Act::GELUTanh: return 0.5f * z * (1.0f + tanhf(kGeluTanhScale * (z + kGeluTanhCubic * z * z * z)));
  }
  return z;
}

// d act(z) / dz; NaN at a NaN z.
MOE_HD inline float activate_grad(Act act, float z) {
  switch (act) {
    case Act::Identity: return 1.0f;
    case Act::ReLU: return z != z ? z : (z > 0.0f ? 1.0f : 0.0f);
    case Act::GELU: {
      const float cdf = 0.5f * erfcf(-z * 0.70710678118654752f);
      const float pdf = 0.39894228040143268f * expf(-0.5f * z * z);
      return cdf + z * pdf;
    }
    case Act::SiLU: {
      const float s = 1.0f / (1.0f + expf(-z));
      return s * (1.0f + z * (1.0f - s));
    }
    case Act::GELUTanh: {
      const float t = tanhf(kGeluTanhScale * (z + kGeluTanhCubic * z * z * z));
      return 0.5f * (1.0f + t) + 0.5f * z * (1.0f - t * t) * kGeluTanhScale * (1.0f + 3.0f * kGeluTanhCubic * z * z);
    }
  }
  return 1.0f;
}

// glu experts: z is [n, 2F], each row the gate projection g (columns [0, F)) then the
// up projection u (columns [F, 2F)); h [n, F] = act(g) ⊙ u. Element i of h:
MOE_HD inline float glu_element(const float* z, std::int64_t width, Act act, std::int64_t i) {
  const std::int64_t row = i / width, col = i % width;
  const float* zr = z + row * 2 * width;
  return activate(act, zr[col]) * zr[width + col];
}

// Its backward for one element of h, from ∂L/∂h and the element's gate g and up u:
// ∂L/∂g = ∂L/∂h · u · act'(g) and ∂L/∂u = ∂L/∂h · act(g).
MOE_HD inline void glu_grad(float dh, float g, float u, Act act, float& d_gate, float& d_up) {
  d_gate = dh * u * activate_grad(act, g);
  d_up = dh * activate(act, g);
}

// The same for element i of h in the arrays: ∂L/∂g and ∂L/∂u into dz [n, 2F].
MOE_HD inline void glu_backward_element(const float* z, const float* dh, std::int64_t width, Act act, std::int64_t i,
                                        float* dz) {
  const std::int64_t row = i / width, col = i % width;
  const float* zr = z + row * 2 * width;
  float* dzr = dz + row * 2 * width;
  glu_grad(dh[i], zr[col], zr[width + col], act, dzr[col], dzr[width + col]);
}

}  // namespace moe::kernels
