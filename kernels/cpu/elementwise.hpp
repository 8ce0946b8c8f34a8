// The CPU's element-wise passes over rows that the GEMMs around them share
// (kernels/cpu/cpu_ops.cpp, kernels/cpu/expert_ffn.cpp): every activation, forward and
// backward, for ffn and glu experts, vectorised.
//
// They run on every hidden unit of every expert, forward and backward: the SiLU of a
// SwiGLU expert through libm's expf cost about an eighth of its GEMMs, the ReLU's
// backward with a branch per element about 4% of a mid training step, and the erf
// GELU through erff left a mid training step at 0.83 of sgemm. They live in
// elementwise.cpp, compiled for AVX-512 and AVX2 as well as the baseline ISA, and the
// best that the CPU runs is picked when the library loads. The per-element functions
// are in fast_math.hpp, with their accuracy.
#pragma once

#include <cstdint>

#include "kernels/activation.hpp"

namespace moe::kernels::cpu {

// out[i] = act(in[i]) (out may be in)
void activation_run(Act act, const float* in, float* out, std::int64_t count);
// dz[i] = dh[i] · act'(z[i]) (dz may alias dh)
void activation_backward_run(Act act, const float* z, const float* dh, float* dz, std::int64_t count);
// A glu row: out[i] = act(gate[i]) · up[i]
void glu_run(Act act, const float* gate, const float* up, float* out, std::int64_t count);
// Its backward: d_gate[i] = d[i] · up[i] · act'(gate[i]), d_up[i] = d[i] · act(gate[i]).
void glu_backward_run(Act act, const float* gate, const float* up, const float* d, float* d_gate, float* d_up,
                      std::int64_t count);

// h[r, :] = act(z[r, :F]) · z[r, F:] for every row of z [rows, 2F] (glu experts).
inline void glu_rows(Act act, const float* z, std::int64_t rows, std::int64_t F, float* h) {
  for (std::int64_t r = 0; r < rows; ++r) glu_run(act, z + r * 2 * F, z + r * 2 * F + F, h + r * F, F);
}

}  // namespace moe::kernels::cpu
