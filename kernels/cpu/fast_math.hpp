// exp and the activations built on it, written so that GCC vectorises them at every ISA
// level from SSE2 to AVX-512 (no -ffast-math; the files using them are compiled with
// -fno-trapping-math, which lets the selects become vector blends and changes no
// result): glibc's expf is a scalar call, and in SwiGLU experts the SiLU of every hidden
// unit otherwise costs about an eighth of the expert GEMMs (measured: a 7.4 ms pass
// against a 49 ms GEMM for 1024 rows of a 1024 → 2·3584 projection); tanhf is one too,
// and the tanh GELU through it made a mid ffn forward 1.5× the ReLU's; so is erff, for
// the exact GELU. The loops that use them are in kernels/cpu/elementwise.cpp.
// fast_exp's accuracy: within 2 ulp of expf for x in [-86.9, 88.72] (every finite result that is a
// normal float above 1.7e-38); NaN in gives NaN out; above 88.73 (past FLT_MAX) +inf;
// below -87.0 (results under 1.7e-38) flushed to 0, between the two ends 0 or the value.
#pragma once

#include <cstdint>
#include <cmath>

#include "kernels/activation.hpp"

namespace moe::kernels::cpu {

inline float fast_exp(float x) {
  // Only two kinds of select, both of which GCC turns into vector blends at every ISA
  // level from SSE2 to AVX-512: clamps of v and isnan(x). (A select on a comparison of
  // x, such as x > 88.7f ? inf : y, made the loops scalar under AVX2 and AVX-512.)
  // Out of range needs no select: the clamps keep n in [-126, 128], where 2^n is
  // exact, and the two ends overflow to +inf and flush to 0 by themselves.
  float v = std::isnan(x) ? 0.0f : x;
  v = v > 89.0f ? 89.0f : v;    // e^89 > FLT_MAX: n = 128, and p · 2^128 rounds to +inf
  v = v < -87.5f ? -87.5f : v;  // n = -126: the scale's exponent field is 0, so y = 0
  // x = n·ln2 + r with |r| ≤ ln2/2; e^x = 2^n · e^r.
  const float t = v * 1.44269504088896341f;
  const auto n = static_cast<std::int32_t>(t + std::copysign(0.5f, t));
  const float nf = static_cast<float>(n);
  const float r = (v - nf * 0.693359375f) + nf * 2.12194440e-4f;  // ln2 in two parts (Cody–Waite)
  // e^r by its Taylor series to r^7/7!, in Horner form.
  float p = 1.98412698e-4f;
  p = p * r + 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^n as 2^(n-1) · 2, so that n = 128 (just below FLT_MAX) has an exponent field;
  // n = -126 gives the bit pattern of +0.
  const float half_scale = __builtin_bit_cast(float, (n + 126) << 23);
  const float y = p * half_scale * 2.0f;
  return std::isnan(x) ? x : y;
}

inline float fast_silu(float z) { return z / (1.0f + fast_exp(-z)); }

// d silu(z)/dz = s·(1 + z·(1 − s)), s = sigmoid(z).
inline float fast_silu_grad(float z) {
  const float s = 1.0f / (1.0f + fast_exp(-z));
  return s * (1.0f + z * (1.0f - s));
}

// The tanh GELU, ½z·(1 + tanh(u)) with u = √(2/π)·(z + 0.044715·z³), written as
// z·sigmoid(2u), which it equals (½(1 + tanh u) = sigmoid(2u)): one fast_exp where
// tanhf is a scalar call, and no cancellation in 1 + tanh(u) for negative z.
inline float gelu_tanh_doubled_argument(float z) {
  return 2.0f * kGeluTanhScale * (z + kGeluTanhCubic * z * z * z);
}

inline float fast_gelu_tanh(float z) { return z / (1.0f + fast_exp(-gelu_tanh_doubled_argument(z))); }

// d/dz z·s with s = sigmoid(2u): s + z·s·(1 − s)·2u', 2u' = 2√(2/π)·(1 + 3·0.044715·z²).
// Past |z| = 16, s is 0 or 1 in float32 and the second term 0, so u' takes z clamped
// there: z² would overflow past 1.8e19 and make that 0 · inf a NaN.
inline float fast_gelu_tanh_grad(float z) {
  const float s = 1.0f / (1.0f + fast_exp(-gelu_tanh_doubled_argument(z)));
  float clamped = z > 16.0f ? 16.0f : z;
  clamped = clamped < -16.0f ? -16.0f : clamped;
  return s + z * s * (1.0f - s) * (2.0f * kGeluTanhScale * (1.0f + 3.0f * kGeluTanhCubic * clamped * clamped));
}

// The exact GELU, z·Φ(z) with Φ the standard normal CDF, where erff is a scalar call
// (it left the erf GELU at 0.83 of sgemm in a mid training step, against 0.94–0.97 for
// the other activations). For a = |z|, Φ(−a) = φ(a)·m(a): φ the normal density, one
// fast_exp, and m Mills' ratio, smooth and slowly falling (m(0) = √(π/2), m(a) ~ 1/a),
// here a polynomial of degree 9 in t = 1/(1 + a/4) fitted by scripts/fit-mills-ratio.py:
// relative error 1.6e-8 as fitted, 4.1e-7 evaluated in float32 (t's rounding), over
// a ≤ 13.5, past which φ(a) is below float's normal range and flushed to 0. Taking the
// lower tail as the product, rather than 1 + erf(z/√2), keeps its relative accuracy for
// negative z, where the sum cancels.
inline float mills_ratio(float a) {
  const float t = 1.0f / (1.0f + 0.25f * a);
  float m = 8.538183571e-02f;
  m = m * t - 4.935391791e-01f;
  m = m * t + 9.948758791e-01f;
  m = m * t - 8.429515264e-01f;
  m = m * t + 7.697366518e-01f;
  m = m * t - 5.492985060e-02f;
  m = m * t + 3.061750980e-01f;
  m = m * t + 2.373407104e-01f;
  m = m * t + 2.512811148e-01f;
  return m * t - 5.661676496e-05f;
}

// φ(z) = e^(−z²/2)/√(2π) and Φ(z), from one fast_exp. Φ takes the tail's product on
// the side of z (the select vectorises: it is on z's sign, outside fast_exp).
struct NormalAt {
  float density, cdf;
};
inline NormalAt fast_normal(float z) {
  const float density = 0.398942280401432678f * fast_exp(-0.5f * z * z);
  const float lower_tail = density * mills_ratio(std::fabs(z));  // Φ(−|z|)
  return {density, z < 0.0f ? lower_tail : 1.0f - lower_tail};
}

inline float fast_gelu(float z) { return z * fast_normal(z).cdf; }

// d/dz z·Φ(z) = Φ(z) + z·φ(z).
inline float fast_gelu_grad(float z) {
  const NormalAt normal = fast_normal(z);
  return normal.cdf + z * normal.density;
}

}  // namespace moe::kernels::cpu
