// The CPU's element-wise passes over rows that the GEMMs around them share
// (kernels/cpu/cpu_ops.cpp, kernels/cpu/expert_ffn.cpp).
//
// The SiLU runs are the hot ones (every hidden unit of a SwiGLU expert, forward and
// backward), and the ReLU's backward (a branch per element on the hidden unit's sign,
// mispredicted half the time, took about 4% of a mid training step until it was
// vectorised). They live in elementwise.cpp, compiled for AVX-512 and AVX2 as well as the
// baseline ISA, and the best that the CPU runs is picked when the library loads.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/activation.hpp"

namespace moe::kernels::cpu {

// out[i] = silu(in[i])
void silu_run(const float* in, float* out, std::int64_t count);
// out[i] = silu(gate[i]) · up[i]
void silu_times_run(const float* gate, const float* up, float* out, std::int64_t count);
// The SwiGLU backward of one row: d_gate[i] = d[i] · up[i] · silu'(gate[i]),
// d_up[i] = d[i] · silu(gate[i]).
void silu_times_backward_run(const float* gate, const float* up, const float* d, float* d_gate, float* d_up,
                             std::int64_t count);
// dz[i] = dh[i] · silu'(z[i]) (dz may alias dh)
void silu_backward_run(const float* z, const float* dh, float* dz, std::int64_t count);
// out[i] = gelu_tanh(in[i]) and dz[i] = dh[i] · gelu_tanh'(z[i]) (dz may alias dh)
void gelu_tanh_run(const float* in, float* out, std::int64_t count);
void gelu_tanh_backward_run(const float* z, const float* dh, float* dz, std::int64_t count);
// The same for a glu row: out[i] = gelu_tanh(gate[i]) · up[i], and its backward as
// silu_times_backward_run's.
void gelu_tanh_times_run(const float* gate, const float* up, float* out, std::int64_t count);
void gelu_tanh_times_backward_run(const float* gate, const float* up, const float* d, float* d_gate, float* d_up,
                                  std::int64_t count);
// dz[i] = dh[i] · relu'(z[i]), NaN at a NaN z (dz may alias dh)
void relu_backward_run(const float* z, const float* dh, float* dz, std::int64_t count);

// out[i] = act(in[i]) for one contiguous run; a switch per run, not per element, so
// the ReLU and identity loops vectorise.
inline void activate_run(Act act, const float* in, float* out, std::int64_t count) {
  switch (act) {
    case Act::Identity:
      if (in != out) std::memcpy(out, in, sizeof(float) * static_cast<std::size_t>(count));
      return;
    case Act::ReLU:
#pragma omp simd
      for (std::int64_t i = 0; i < count; ++i) out[i] = in[i] < 0.0f ? 0.0f : in[i];  // NaN passes
      return;
    case Act::SiLU: return silu_run(in, out, count);
    case Act::GELUTanh: return gelu_tanh_run(in, out, count);
    default:
      for (std::int64_t i = 0; i < count; ++i) out[i] = activate(act, in[i]);
      return;
  }
}

// h[r, :] = act(z[r, :F]) · z[r, F:] for every row of z [rows, 2F] (glu experts).
inline void glu_rows(Act act, const float* z, std::int64_t rows, std::int64_t F, float* h) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* gate = z + r * 2 * F;
    const float* up = gate + F;
    float* out = h + r * F;
    if (act == Act::SiLU) {
      silu_times_run(gate, up, out, F);
    } else if (act == Act::GELUTanh) {
      gelu_tanh_times_run(gate, up, out, F);
    } else {
      for (std::int64_t c = 0; c < F; ++c) out[c] = activate(act, gate[c]) * up[c];
    }
  }
}

}  // namespace moe::kernels::cpu
