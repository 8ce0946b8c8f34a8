// The activations' loops, forward and backward, for ffn and glu experts: each is one
// template over the activation, compiled three times per activation (GCC's
// target_clones: x86-64-v4 with AVX-512, x86-64-v3 with AVX2 and FMA, and the baseline),
// the best of which the dynamic loader picks for the CPU it runs on. The library itself
// is built for the baseline so that it runs anywhere; at 4 lanes SSE2 made the SwiGLU
// product about a tenth of a Mixtral-like expert's time (docs/performance.md).
//
// The clones may round differently (AVX2 and AVX-512 contract a·b + c into an FMA), all
// within fast_math.hpp's stated accuracy; one machine always runs the same clone.
#include "kernels/cpu/elementwise.hpp"

#include <cstring>

#include "kernels/cpu/fast_math.hpp"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MOE_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MOE_VECTOR_CLONES
#endif

namespace moe::kernels::cpu {
namespace {

// Each activation's value and slope per element, in forms the loops vectorise: no
// branch, no scalar libm call. NaN in gives NaN out, as activation.hpp's definitions do.
struct Identity {
  static float value(float z) { return z; }
  static float slope(float) { return 1.0f; }
};
struct Relu {
  static float value(float z) { return z < 0.0f ? 0.0f : z; }  // NaN < 0 is false: NaN passes
  // Selected, then multiplied by the loop: no branch per element for random signs to mispredict.
  static float slope(float z) { return z != z ? z : (z > 0.0f ? 1.0f : 0.0f); }
};
struct Gelu {
  static float value(float z) { return fast_gelu(z); }
  static float slope(float z) { return fast_gelu_grad(z); }
};
struct Silu {
  static float value(float z) { return fast_silu(z); }
  static float slope(float z) { return fast_silu_grad(z); }
};
struct GeluTanh {
  static float value(float z) { return fast_gelu_tanh(z); }
  static float slope(float z) { return fast_gelu_tanh_grad(z); }
};

template <class A>
MOE_VECTOR_CLONES void forward_loop(const float* in, float* out, std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) out[i] = A::value(in[i]);
}

template <class A>
MOE_VECTOR_CLONES void backward_loop(const float* z, const float* dh, float* dz, std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) dz[i] = dh[i] * A::slope(z[i]);
}

template <class A>
MOE_VECTOR_CLONES void glu_loop(const float* gate, const float* up, float* out, std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) out[i] = A::value(gate[i]) * up[i];
}

template <class A>
MOE_VECTOR_CLONES void glu_backward_loop(const float* gate, const float* up, const float* d, float* d_gate,
                                         float* d_up, std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) {
    d_gate[i] = d[i] * up[i] * A::slope(gate[i]);
    d_up[i] = d[i] * A::value(gate[i]);
  }
}

// Calls body(the activation's struct): the one switch from Act to the loops.
template <class Body>
void with_activation(Act act, Body&& body) {
  switch (act) {
    case Act::Identity: return body(Identity{});
    case Act::ReLU: return body(Relu{});
    case Act::GELU: return body(Gelu{});
    case Act::SiLU: return body(Silu{});
    case Act::GELUTanh: return body(GeluTanh{});
  }
}

}  // namespace

void activation_run(Act act, const float* in, float* out, std::int64_t count) {
  if (act == Act::Identity) {
    if (in != out) std::memcpy(out, in, sizeof(float) * static_cast<std::size_t>(count));
    return;
  }
  with_activation(act, [&](auto a) { forward_loop<decltype(a)>(in, out, count); });
}

void activation_backward_run(Act act, const float* z, const float* dh, float* dz, std::int64_t count) {
  with_activation(act, [&](auto a) { backward_loop<decltype(a)>(z, dh, dz, count); });
}

void glu_run(Act act, const float* gate, const float* up, float* out, std::int64_t count) {
  with_activation(act, [&](auto a) { glu_loop<decltype(a)>(gate, up, out, count); });
}

void glu_backward_run(Act act, const float* gate, const float* up, const float* d, float* d_gate, float* d_up,
                      std::int64_t count) {
  with_activation(act, [&](auto a) { glu_backward_loop<decltype(a)>(gate, up, d, d_gate, d_up, count); });
}

}  // namespace moe::kernels::cpu
