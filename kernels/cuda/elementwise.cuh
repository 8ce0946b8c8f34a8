// Element-wise passes: bias + activation after a GEMM, the activation's backward, and
// the float32 → bfloat16 conversion of GEMM inputs.
#pragma once

#include <cstdint>

#include "kernels/activation.hpp"
#include "kernels/cuda/stream.cuh"
#include "kernels/host_device.hpp"

namespace moe::kernels::cuda {

// Element i of an [n, cols] GEMM result c: z = c[i] + bias[i % cols]; pre_act[i] = z
// when kept; returns act(z).
MOE_HD inline float bias_activation_element(const float* c, const float* bias, std::int64_t cols, Act act,
                                            std::int64_t i, float* pre_act) {
  const float z = c[i] + (bias ? bias[i % cols] : 0.0f);
  if (pre_act) pre_act[i] = z;
  return activate(act, z);
}

// The group of row `row`: the g with offsets[g] <= row < offsets[g+1] (binary search).
MOE_HD inline int group_of_row(const std::int64_t* offsets, int groups, std::int64_t row) {
  int lo = 0, hi = groups - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (offsets[mid] <= row) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// bias_activation_element for grouped rows: row r takes the bias of its group.
MOE_HD inline float grouped_bias_activation_element(const float* c, const float* const* biases,
                                                    const std::int64_t* offsets, int groups, std::int64_t cols,
                                                    Act act, std::int64_t i, float* pre_act) {
  const float* bias = biases[group_of_row(offsets, groups, i / cols)];
  const float z = c[i] + (bias ? bias[i % cols] : 0.0f);
  if (pre_act) pre_act[i] = z;
  return activate(act, z);
}

// in place on `c` when out == c.
void launch_bias_activation(const float* c, const float* bias, std::int64_t n, std::int64_t cols, Act act,
                            float* pre_act, float* out, Stream stream);
void launch_grouped_bias_activation(const float* c, const float* const* biases, const std::int64_t* offsets, int groups,
                                    std::int64_t n, std::int64_t cols, Act act, float* pre_act, float* out,
                                    Stream stream);
void launch_activation_backward(const float* z, const float* dh, std::int64_t n, Act act, float* dz, Stream stream);
// glu experts and the shared expert's gated add (the ops of the same names).
void launch_glu(const float* z, std::int64_t n, std::int64_t width, Act act, float* h, Stream stream);
void launch_glu_backward(const float* z, const float* dh, std::int64_t n, std::int64_t width, Act act, float* dz,
                         Stream stream);
void launch_gated_add(const float* y, const float* gate_logit, std::int64_t n, std::int64_t width, float* out,
                      Stream stream);
void launch_gated_add_backward(const float* d_out, const float* y, const float* gate_logit, std::int64_t n,
                               std::int64_t width, float* d_y, float* d_gate_logit, Stream stream);
// dst (bfloat16, as raw 16-bit words) = round-to-nearest-even of src.
void launch_to_bf16(const float* src, std::int64_t n, void* dst, Stream stream);

}  // namespace moe::kernels::cuda
