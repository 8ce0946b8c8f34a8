#include <cuda_bf16.h>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/elementwise.cuh"

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

__global__ void to_bf16_kernel(const float* src, std::int64_t n, __nv_bfloat16* dst) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
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

void launch_to_bf16(const float* src, std::int64_t n, void* dst, Stream stream) {
  if (n == 0) return;
  to_bf16_kernel<<<blocks_for(n, kBlock), kBlock, 0, stream>>>(src, n, static_cast<__nv_bfloat16*>(dst));
  MOE_CHECK_LAUNCH();
}

}  // namespace moe::kernels::cuda
