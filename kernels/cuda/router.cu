#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/router.cuh"
#include "kernels/router_row.hpp"

namespace moe::kernels::cuda {
namespace {

__global__ void softmax_topk_kernel(const float* logits, std::int64_t tokens, int E, int k, bool normalize, float* probs,
                                    std::int32_t* indices, float* weights, float* lse) {
  const std::int64_t t = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (t >= tokens) return;
  const float row_lse =
      softmax_topk_row(logits + t * E, E, k, normalize, probs + t * E, indices + t * k, weights + t * k);
  if (lse) lse[t] = row_lse;
}

__global__ void router_backward_kernel(const float* probs, const std::int32_t* indices, const float* d_weights,
                                       const float* lse, std::int64_t tokens, int E, int k, bool normalize,
                                       const float* aux_grad, float z_scale, float* d_logits) {
  const std::int64_t t = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (t >= tokens) return;
  router_backward_row(probs + t * E, indices + t * k, d_weights + t * k, lse[t], E, k, normalize, aux_grad, z_scale,
                      d_logits + t * E);
}

}  // namespace

void launch_softmax_topk(const float* logits, std::int64_t tokens, int num_experts, int top_k, bool normalize,
                         float* probs, std::int32_t* indices, float* weights, float* lse, Stream stream) {
  if (tokens == 0) return;
  softmax_topk_kernel<<<blocks_for(tokens, 128), 128, 0, stream>>>(logits, tokens, num_experts, top_k, normalize, probs,
                                                                   indices, weights, lse);
  MOE_CHECK_LAUNCH();
}

void launch_router_backward(const float* probs, const std::int32_t* indices, const float* d_weights, const float* lse,
                            std::int64_t tokens, int num_experts, int top_k, bool normalize, const float* aux_grad,
                            float z_scale, float* d_logits, Stream stream) {
  if (tokens == 0) return;
  router_backward_kernel<<<blocks_for(tokens, 128), 128, 0, stream>>>(probs, indices, d_weights, lse, tokens,
                                                                      num_experts, top_k, normalize, aux_grad, z_scale,
                                                                      d_logits);
  MOE_CHECK_LAUNCH();
}

}  // namespace moe::kernels::cuda
