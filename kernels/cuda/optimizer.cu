#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/optimizer.cuh"
#include "kernels/optimizer_math.hpp"

namespace moe::kernels::cuda {
namespace {

#define MOE_GRID_STRIDE(i, n)                                                                     \
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)

__global__ void sgd_kernel(float* p, const float* g, float* m, std::int64_t n, float lr, float mu, float wd) {
  MOE_GRID_STRIDE(i, n) sgd_element(p[i], g[i], m[i], lr, mu, wd);
}

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, std::int64_t n, float lr, float b1, float b2,
                             float eps, float wd, float c1, float c2) {
  MOE_GRID_STRIDE(i, n) adamw_element(p[i], g[i], m[i], v[i], lr, b1, b2, eps, wd, c1, c2);
}

__global__ void add_kernel(float* x, const float* y, std::int64_t n) { MOE_GRID_STRIDE(i, n) x[i] += y[i]; }
__global__ void scale_kernel(float* x, std::int64_t n, float s) { MOE_GRID_STRIDE(i, n) x[i] *= s; }

}  // namespace

void launch_sgd(float* param, const float* grad, float* momentum, std::int64_t n, float lr, float mu,
                float weight_decay, Stream stream) {
  if (n == 0) return;
  sgd_kernel<<<blocks_for(n, kBlock), kBlock, 0, stream>>>(param, grad, momentum, n, lr, mu, weight_decay);
  MOE_CHECK_LAUNCH();
}

void launch_adamw(float* param, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float correction1, float correction2, Stream stream) {
  if (n == 0) return;
  adamw_kernel<<<blocks_for(n, kBlock), kBlock, 0, stream>>>(param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay,
                                                             correction1, correction2);
  MOE_CHECK_LAUNCH();
}

void launch_add(float* x, const float* y, std::int64_t n, Stream stream) {
  if (n == 0) return;
  add_kernel<<<blocks_for(n, kBlock), kBlock, 0, stream>>>(x, y, n);
  MOE_CHECK_LAUNCH();
}

void launch_scale(float* x, std::int64_t n, float s, Stream stream) {
  if (n == 0) return;
  scale_kernel<<<blocks_for(n, kBlock), kBlock, 0, stream>>>(x, n, s);
  MOE_CHECK_LAUNCH();
}

}  // namespace moe::kernels::cuda
