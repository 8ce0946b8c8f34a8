// The SiLU and tanh-GELU loops and the ReLU's backward, each compiled three times
// (GCC's target_clones: x86-64-v4 with AVX-512, x86-64-v3 with AVX2 and FMA, and the
// baseline), the best of which the dynamic loader picks for the CPU it runs on. The library itself is built for the
// baseline so that it runs anywhere; at 4 lanes SSE2 made the SwiGLU product about a
// tenth of a Mixtral-like expert's time (docs/performance.md).
//
// The clones may round differently (AVX2 and AVX-512 contract a·b + c into an FMA), all
// within fast_exp's stated accuracy; one machine always runs the same clone.
#include "kernels/cpu/elementwise.hpp"

#include "kernels/cpu/fast_math.hpp"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MOE_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MOE_VECTOR_CLONES
#endif

namespace moe::kernels::cpu {

MOE_VECTOR_CLONES void silu_run(const float* in, float* out, std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) out[i] = fast_silu(in[i]);
}

MOE_VECTOR_CLONES void silu_times_run(const float* gate, const float* up, float* out, std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) out[i] = fast_silu(gate[i]) * up[i];
}

MOE_VECTOR_CLONES void silu_times_backward_run(const float* gate, const float* up, const float* d, float* d_gate,
                                               float* d_up, std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) {
    d_gate[i] = d[i] * up[i] * fast_silu_grad(gate[i]);
    d_up[i] = d[i] * fast_silu(gate[i]);
  }
}

MOE_VECTOR_CLONES void silu_backward_run(const float* z, const float* dh, float* dz, std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) dz[i] = dh[i] * fast_silu_grad(z[i]);
}

MOE_VECTOR_CLONES void gelu_tanh_run(const float* in, float* out, std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) out[i] = fast_gelu_tanh(in[i]);
}

MOE_VECTOR_CLONES void gelu_tanh_backward_run(const float* z, const float* dh, float* dz, std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) dz[i] = dh[i] * fast_gelu_tanh_grad(z[i]);
}

MOE_VECTOR_CLONES void gelu_tanh_times_run(const float* gate, const float* up, float* out, std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) out[i] = fast_gelu_tanh(gate[i]) * up[i];
}

MOE_VECTOR_CLONES void gelu_tanh_times_backward_run(const float* gate, const float* up, const float* d, float* d_gate,
                                                    float* d_up, std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) {
    d_gate[i] = d[i] * up[i] * fast_gelu_tanh_grad(gate[i]);
    d_up[i] = d[i] * fast_gelu_tanh(gate[i]);
  }
}

// The slope is selected, then multiplied, as activate_grad's is: the same bits, NaN
// included, without the branch per element that random signs mispredict.
MOE_VECTOR_CLONES void relu_backward_run(const float* z, const float* dh, float* dz, std::int64_t count) {
#pragma omp simd
  for (std::int64_t i = 0; i < count; ++i) {
    const float zi = z[i];
    const float slope = zi != zi ? zi : (zi > 0.0f ? 1.0f : 0.0f);
    dz[i] = dh[i] * slope;
  }
}

}  // namespace moe::kernels::cpu
