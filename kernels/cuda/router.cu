#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/router.cuh"
#include "kernels/router_lanes.hpp"

namespace moe::kernels::cuda {
namespace {

// Over 256 experts or 32 choices (route_lanes_kernel, below, takes the rest): a thread
// per token with serial work per row (top-k over E); small blocks spread a few thousand
// tokens over every multiprocessor (8192 tokens: 256 blocks for 132 SMs).
constexpr int kRouterBlock = 32;

__global__ void route_kernel(const float* logits, std::int64_t tokens, RouterParams p, const float* expert_bias,
                             float* probs, std::int32_t* indices, float* weights, float* lse) {
  const std::int64_t t = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (t >= tokens) return;
  const int E = p.num_experts, k = p.top_k;
  const float row_lse = route_row(logits + t * E, p, expert_bias, probs + t * E, indices + t * k, weights + t * k);
  if (lse) lse[t] = row_lse;
}

// The same, with the block's rows staged in shared memory. route_row walks a token's
// scores k·E times in its top-k selection; from global memory each walk went to the
// cache hierarchy (ncu, fine forward on an H200, 2026-11-27: 317 µs for 8192 tokens of
// 64 experts, k = 8, more than the routing's GEMM). Staged it took 265 µs: a thread's
// serial selection, not memory, bounds it (select_top_k's bit mask cuts that work).
// Rows are stored E + 1 apart (k + 1 for the choices), so a warp's threads, each on its
// own row, hit distinct banks; the copies in and out are coalesced over the block's rows.
__global__ void route_staged_kernel(const float* logits, std::int64_t tokens, RouterParams p,
                                    const float* expert_bias, float* probs, std::int32_t* indices, float* weights,
                                    float* lse) {
  extern __shared__ float staged[];
  const int E = p.num_experts, k = p.top_k, rows_in_block = static_cast<int>(blockDim.x);
  const int row = E + 1, choice_row = k + 1;
  float* s_logits = staged;
  float* s_probs = s_logits + rows_in_block * row;
  float* s_weights = s_probs + rows_in_block * row;
  float* s_bias = s_weights + rows_in_block * choice_row;
  auto* s_indices = reinterpret_cast<std::int32_t*>(s_bias + E);
  if (expert_bias)
    for (int e = threadIdx.x; e < E; e += blockDim.x) s_bias[e] = expert_bias[e];
  for (std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * rows_in_block; first < tokens;
       first += static_cast<std::int64_t>(gridDim.x) * rows_in_block) {
    const int rows = static_cast<int>(tokens - first < rows_in_block ? tokens - first : rows_in_block);
    for (int i = threadIdx.x; i < rows * E; i += blockDim.x) s_logits[(i / E) * row + i % E] = logits[first * E + i];
    __syncthreads();
    const int t = threadIdx.x;
    if (t < rows) {
      const float row_lse = route_row(s_logits + t * row, p, expert_bias ? s_bias : nullptr, s_probs + t * row,
                                      s_indices + t * choice_row, s_weights + t * choice_row);
      if (lse) lse[first + t] = row_lse;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < rows * E; i += blockDim.x) probs[first * E + i] = s_probs[(i / E) * row + i % E];
    for (int i = threadIdx.x; i < rows * k; i += blockDim.x) {
      indices[first * k + i] = s_indices[(i / k) * choice_row + i % k];
      weights[first * k + i] = s_weights[(i / k) * choice_row + i % k];
    }
    __syncthreads();  // before the next rows overwrite the staging
  }
}

// The Warp of route_row_across_lanes: the reductions are butterflies of shuffles, so
// every lane ends with the same bits (lane i adds or compares its value with lane
// i ^ offset's, the same two numbers its partner combines).
struct ShuffleWarp {
  __device__ int lane() const { return static_cast<int>(threadIdx.x) % kRouterLanes; }
  __device__ float sum(float x) const {
    for (int offset = kRouterLanes / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
  }
  __device__ Choice best(Choice c) const {
    for (int offset = kRouterLanes / 2; offset > 0; offset /= 2) {
      const Choice other{__shfl_xor_sync(0xffffffffu, c.key, offset), __shfl_xor_sync(0xffffffffu, c.value, offset),
                         __shfl_xor_sync(0xffffffffu, c.index, offset)};
      c = better_choice(c, other);
    }
    return c;
  }
};

// A warp per token (kernels/router_lanes.hpp), up to 256 experts and k ≤ 32. The
// token index is the warp's, so a warp's lanes leave the loop together.
constexpr int kRouterWarpBlock = 256;
template <int kPerLane>
__global__ void route_lanes_kernel(const float* logits, std::int64_t tokens, RouterParams p, const float* expert_bias,
                                   float* probs, std::int32_t* indices, float* weights, float* lse) {
  const int warps_per_block = static_cast<int>(blockDim.x) / kRouterLanes;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / kRouterLanes;
  const int E = p.num_experts, k = p.top_k;
  ShuffleWarp warp;
  for (std::int64_t t = first; t < tokens; t += static_cast<std::int64_t>(gridDim.x) * warps_per_block) {
    const float row_lse = route_row_across_lanes<kPerLane>(warp, logits + t * E, p, expert_bias, probs + t * E,
                                                           indices + t * k, weights + t * k);
    if (lse && warp.lane() == 0) lse[t] = row_lse;
  }
}

using RouteLanesKernel = void (*)(const float*, std::int64_t, RouterParams, const float*, float*, std::int32_t*,
                                 float*, float*);
RouteLanesKernel route_lanes_kernel_for(int experts_per_lane) {
  switch (experts_per_lane) {
    case 1: return route_lanes_kernel<1>;
    case 2: return route_lanes_kernel<2>;
    case 4: return route_lanes_kernel<4>;
    case 8: return route_lanes_kernel<8>;
    default: return nullptr;
  }
}

// Shared memory for route_staged_kernel's rows: logits and probs (E + 1 apart), weights
// and choices (k + 1 apart), and the bias.
std::size_t staged_bytes(const RouterParams& p, int rows) {
  return sizeof(float) * (static_cast<std::size_t>(rows) * (2 * (p.num_experts + 1) + 2 * (p.top_k + 1)) +
                          static_cast<std::size_t>(p.num_experts));
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
  if (const RouteLanesKernel kernel = route_lanes_kernel_for(router_experts_per_lane(params))) {
    kernel<<<blocks_for(tokens, kRouterWarpBlock / kRouterLanes), kRouterWarpBlock, 0, stream>>>(
        logits, tokens, params, expert_bias, probs, indices, weights, lse);
    MOE_CHECK_LAUNCH();
    return;
  }
  // Over 256 experts or k > 32, a thread per token runs route_row:
  // Staged in shared memory when a block's rows fit in the default 48 KiB (with k = 8,
  // up to 179 experts at 32 rows, 362 at 16); else from global memory.
  for (int rows = kRouterBlock; rows >= 16; rows /= 2) {
    const std::size_t bytes = staged_bytes(params, rows);
    if (bytes > 48 * 1024) continue;
    route_staged_kernel<<<blocks_for(tokens, rows), rows, bytes, stream>>>(logits, tokens, params, expert_bias, probs,
                                                                          indices, weights, lse);
    MOE_CHECK_LAUNCH();
    return;
  }
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
