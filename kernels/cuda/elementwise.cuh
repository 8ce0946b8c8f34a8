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

// in place on `c` when out == c.
void launch_bias_activation(const float* c, const float* bias, std::int64_t n, std::int64_t cols, Act act,
                            float* pre_act, float* out, Stream stream);
void launch_activation_backward(const float* z, const float* dh, std::int64_t n, Act act, float* dz, Stream stream);
// dst (bfloat16, as raw 16-bit words) = round-to-nearest-even of src.
void launch_to_bf16(const float* src, std::int64_t n, void* dst, Stream stream);

}  // namespace moe::kernels::cuda
