// Optimizer arithmetic on the GPU: kernels/optimizer_math.hpp per element.
#pragma once

#include <cstdint>

#include "kernels/cuda/stream.cuh"

namespace moe::kernels::cuda {

void launch_sgd(float* param, const float* grad, float* momentum, std::int64_t n, float lr, float mu,
                float weight_decay, Stream stream);
void launch_adamw(float* param, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float correction1, float correction2, Stream stream);
void launch_add(float* x, const float* y, std::int64_t n, Stream stream);
void launch_scale(float* x, std::int64_t n, float s, Stream stream);

}  // namespace moe::kernels::cuda
