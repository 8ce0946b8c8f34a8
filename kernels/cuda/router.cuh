// The router on the GPU: one thread per token runs the row functions of
// kernels/router_row.hpp, the same code the CPU ops run.
#pragma once

#include <cstdint>

#include "kernels/cuda/stream.cuh"
#include "kernels/router_row.hpp"

namespace moe::kernels::cuda {

void launch_route(const float* logits, std::int64_t tokens, const RouterParams& params, const float* expert_bias,
                  float* probs, std::int32_t* indices, float* weights, float* lse, Stream stream);
void launch_router_backward(const float* logits, const float* probs, const std::int32_t* indices,
                            const float* d_weights, const float* lse, std::int64_t tokens, const RouterParams& params,
                            const float* aux_grad, float z_scale, float* d_logits, Stream stream);

}  // namespace moe::kernels::cuda
