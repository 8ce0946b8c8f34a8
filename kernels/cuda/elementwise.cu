#include <cuda_bf16.h>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/vector_access.cuh"
#include "kernels/router_row.hpp"

namespace moe::kernels::cuda {
namespace {

__global__ void bias_activation_kernel(const float* c, const float* bias, std::int64_t n, std::int64_t cols, Act act,
                                       float* pre_act, float* out) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = bias_activation_element(c, bias, cols, act, i, pre_act);
}

__global__ void grouped_bias_activation_kernel(const float* c, const float* const* biases, const std::int64_t* offsets,
                                               int groups, std::int64_t n, std::int64_t cols, Act act, float* pre_act,
                                               float* out) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = grouped_bias_activation_element(c, biases, offsets, groups, cols, act, i, pre_act);
}

__global__ void activation_backward_kernel(const float* z, const float* dh, std::int64_t n, Act act, float* dz) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    dz[i] = dh[i] * activate_grad(act, z[i]);
}

__global__ void glu_kernel(const float* z, std::int64_t n, std::int64_t width, Act act, float* h) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    h[i] = glu_element(z, width, act, i);
}

__global__ void glu_backward_kernel(const float* z, const float* dh, std::int64_t n, std::int64_t width, Act act,
                                    float* dz) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    glu_backward_element(z, dh, width, act, i, dz);
}

__global__ void gated_add_kernel(const float* y, const float* gate_logit, std::int64_t n, std::int64_t width,
                                 float* out) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate_logit ? sigmoid(gate_logit[i / width]) : 1.0f;
    out[i] += g * y[i];
  }
}

// One block of 256 threads per row: the row's dot product reduced in shared memory.
__global__ void gated_add_backward_kernel(const float* d_out, const float* y, const float* gate_logit,
                                          std::int64_t width, float* d_y, float* d_gate_logit) {
  __shared__ float partial[256];
  const std::int64_t r = blockIdx.x;
  const float g = gate_logit ? sigmoid(gate_logit[r]) : 1.0f;
  float dot = 0.0f;
  for (std::int64_t h = threadIdx.x; h < width; h += blockDim.x) {
    const std::int64_t i = r * width + h;
    d_y[i] = g * d_out[i];
    dot += d_out[i] * y[i];
  }
  partial[threadIdx.x] = dot;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0 && gate_logit && d_gate_logit) d_gate_logit[r] = partial[0] * g * (1.0f - g);
}

// V elements a thread (vector_access.cuh); n a multiple of V.
template <int V>
__global__ void to_bf16_kernel(const float* src, std::int64_t n, __nv_bfloat16* dst) {
  for (std::int64_t i = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) * V; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x * V) {
    float v[V];
    load<V>(src + i, v);
    store<V>(dst + i, v);
  }
}

}  // namespace

void launch_bias_activation(const float* c, const float* bias, std::int64_t n, std::int64_t cols, Act act,
                            float* pre_act, float* out, Stream stream) {
  if (n == 0) return;
  bias_activation_kernel<<<blocks_for(n, kBlock), kBlock, 0, stream>>>(c, bias, n, cols, act, pre_act, out);
  MOE_CHECK_LAUNCH();
}

void launch_grouped_bias_activation(const float* c, const float* const* biases, const std::int64_t* offsets, int groups,
                                    std::int64_t n, std::int64_t cols, Act act, float* pre_act, float* out,
                                    Stream stream) {
  if (n == 0) return;
  grouped_bias_activation_kernel<<<blocks_for(n, kBlock), kBlock, 0, stream>>>(c, biases, offsets, groups, n, cols, act,
                                                                               pre_act, out);
  MOE_CHECK_LAUNCH();
}

void launch_activation_backward(const float* z, const float* dh, std::int64_t n, Act act, float* dz, Stream stream) {
  if (n == 0) return;
  activation_backward_kernel<<<blocks_for(n, kBlock), kBlock, 0, stream>>>(z, dh, n, act, dz);
  MOE_CHECK_LAUNCH();
}

void launch_glu(const float* z, std::int64_t n, std::int64_t width, Act act, float* h, Stream stream) {
  if (n * width == 0) return;
  glu_kernel<<<blocks_for(n * width, kBlock), kBlock, 0, stream>>>(z, n * width, width, act, h);
  MOE_CHECK_LAUNCH();
}

void launch_glu_backward(const float* z, const float* dh, std::int64_t n, std::int64_t width, Act act, float* dz,
                         Stream stream) {
  if (n * width == 0) return;
  glu_backward_kernel<<<blocks_for(n * width, kBlock), kBlock, 0, stream>>>(z, dh, n * width, width, act, dz);
  MOE_CHECK_LAUNCH();
}

void launch_gated_add(const float* y, const float* gate_logit, std::int64_t n, std::int64_t width, float* out,
                      Stream stream) {
  if (n * width == 0) return;
  gated_add_kernel<<<blocks_for(n * width, kBlock), kBlock, 0, stream>>>(y, gate_logit, n * width, width, out);
  MOE_CHECK_LAUNCH();
}

void launch_gated_add_backward(const float* d_out, const float* y, const float* gate_logit, std::int64_t n,
                               std::int64_t width, float* d_y, float* d_gate_logit, Stream stream) {
  if (n * width == 0) return;
  gated_add_backward_kernel<<<static_cast<unsigned>(n), 256, 0, stream>>>(d_out, y, gate_logit, width, d_y,
                                                                          d_gate_logit);
  MOE_CHECK_LAUNCH();
}

void launch_to_bf16(const float* src, std::int64_t n, void* dst, Stream stream) {
  if (n == 0) return;
  auto* out = static_cast<__nv_bfloat16*>(dst);
  // The first n - n mod 4 four at a time when aligned, the rest one at a time.
  const std::int64_t body = vector_aligned(n - n % 4, {{src, 4}, {dst, 2}}) ? n - n % 4 : 0;
  if (body > 0) {
    to_bf16_kernel<4><<<blocks_for(body / 4, kBlock), kBlock, 0, stream>>>(src, body, out);
    MOE_CHECK_LAUNCH();
  }
  if (n > body) {
    to_bf16_kernel<1><<<blocks_for(n - body, kBlock), kBlock, 0, stream>>>(src + body, n - body, out + body);
    MOE_CHECK_LAUNCH();
  }
}

}  // namespace moe::kernels::cuda
