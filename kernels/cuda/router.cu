#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/router.cuh"

namespace moe::kernels::cuda {
namespace {

// A thread per token with serial work per row (top-k over E): small blocks spread a few
// thousand tokens over every multiprocessor (8192 tokens: 256 blocks for 132 SMs).
constexpr int kRouterBlock = 32;

__global__ void route_kernel(const float* logits, std::int64_t tokens, RouterParams p, const float* expert_bias,
                             float* probs, std::int32_t* indices, float* weights, float* lse) {
  const std::int64_t t = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (t >= tokens) return;
  const int E = p.num_experts, k = p.top_k;
  const float row_lse = route_row(logits + t * E, p, expert_bias, probs + t * E, indices + t * k, weights + t * k);
  if (lse) lse[t] = row_lse;
}

__global__ void router_backward_kernel(const float* logits, const float* probs, const std::int32_t* indices,
                                       const float* d_weights, const float* lse, std::int64_t tokens, RouterParams p,
                                       const float* aux_grad, float z_scale, float* d_logits) {
  const std::int64_t t = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (t >= tokens) return;
  const int E = p.num_experts, k = p.top_k;
  router_backward_row(logits + t * E, probs + t * E, indices + t * k, d_weights + t * k, lse[t], p, aux_grad, z_scale,
                      d_logits + t * E);
}

}  // namespace

void launch_route(const float* logits, std::int64_t tokens, const RouterParams& params, const float* expert_bias,
                  float* probs, std::int32_t* indices, float* weights, float* lse, Stream stream) {
  if (tokens == 0) return;
  route_kernel<<<blocks_for(tokens, kRouterBlock), kRouterBlock, 0, stream>>>(logits, tokens, params, expert_bias, probs, indices,
                                                            weights, lse);
  MOE_CHECK_LAUNCH();
}

void launch_router_backward(const float* logits, const float* probs, const std::int32_t* indices,
                            const float* d_weights, const float* lse, std::int64_t tokens, const RouterParams& params,
                            const float* aux_grad, float z_scale, float* d_logits, Stream stream) {
  if (tokens == 0) return;
  router_backward_kernel<<<blocks_for(tokens, kRouterBlock), kRouterBlock, 0, stream>>>(logits, probs, indices, d_weights, lse, tokens,
                                                                      params, aux_grad, z_scale, d_logits);
  MOE_CHECK_LAUNCH();
}

}  // namespace moe::kernels::cuda
