// The router on the GPU: one thread per token runs the row functions of
// kernels/router_row.hpp, the same code the CPU ops run.
#pragma once

#include <cstdint>

#include "kernels/cuda/stream.cuh"

namespace moe::kernels::cuda {

void launch_softmax_topk(const float* logits, std::int64_t tokens, int num_experts, int top_k, bool normalize,
                         float* probs, std::int32_t* indices, float* weights, float* lse, Stream stream);
void launch_router_backward(const float* probs, const std::int32_t* indices, const float* d_weights,
                            const float* lse, std::int64_t tokens, int num_experts, int top_k, bool normalize,
                            const float* aux_grad, float z_scale, float* d_logits, Stream stream);

}  // namespace moe::kernels::cuda
