#include <cuda_bf16.h>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/expert_epilogue.cuh"

namespace moe::kernels::cuda {
namespace {

// A block per row (striding when rows exceed the grid): the row's group is looked up
// once (binary search over the offsets), and the threads walk its columns, coalesced.
__global__ void expert_hidden_kernel(const __nv_bfloat16* z, const float* const* biases, const std::int64_t* offsets,
                                     int groups, std::int64_t rows, std::int64_t width, bool gated, Act act,
                                     float* pre, float* hidden, __nv_bfloat16* hidden_bf16) {
  const std::int64_t z_width = gated ? 2 * width : width;
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* bias = biases[group_of_row(offsets, groups, r)];
    const __nv_bfloat16* zr = z + r * z_width;
    float* pre_r = pre ? pre + r * z_width : nullptr;
    for (std::int64_t j = threadIdx.x; j < width; j += blockDim.x) {
      const float gate = __bfloat162float(zr[j]) + (bias ? bias[j] : 0.0f);
      const float up = gated ? __bfloat162float(zr[width + j]) + (bias ? bias[width + j] : 0.0f) : 0.0f;
      const float h = expert_hidden_value(gate, up, gated, act);
      if (pre_r) {
        pre_r[j] = gate;
        if (gated) pre_r[width + j] = up;
      }
      if (hidden) hidden[r * width + j] = h;
      hidden_bf16[r * width + j] = __float2bfloat16_rn(h);
    }
  }
}

__global__ void expert_output_kernel(const __nv_bfloat16* y, const float* const* biases, const std::int64_t* offsets,
                                     int groups, std::int64_t rows, std::int64_t cols, Act act, float* pre,
                                     float* out) {
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* bias = biases[group_of_row(offsets, groups, r)];
    for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const std::int64_t i = r * cols + j;
      const float z = __bfloat162float(y[i]) + (bias ? bias[j] : 0.0f);
      if (pre) pre[i] = z;
      out[i] = activate(act, z);
    }
  }
}

unsigned row_blocks(std::int64_t rows) { return static_cast<unsigned>(rows < (1 << 20) ? rows : (1 << 20)); }

}  // namespace

void launch_expert_hidden(const void* z, const float* const* biases, const std::int64_t* offsets, int groups,
                          std::int64_t rows, std::int64_t width, bool gated, Act act, float* pre, float* hidden,
                          void* hidden_bf16, Stream stream) {
  if (rows * width == 0) return;
  expert_hidden_kernel<<<row_blocks(rows), kBlock, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(z), biases, offsets, groups, rows, width, gated, act, pre, hidden,
      static_cast<__nv_bfloat16*>(hidden_bf16));
  MOE_CHECK_LAUNCH();
}

void launch_expert_output(const void* y, const float* const* biases, const std::int64_t* offsets, int groups,
                          std::int64_t rows, std::int64_t cols, Act act, float* pre, float* out, Stream stream) {
  if (rows * cols == 0) return;
  expert_output_kernel<<<row_blocks(rows), kBlock, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(y), biases, offsets, groups, rows, cols, act, pre, out);
  MOE_CHECK_LAUNCH();
}

}  // namespace moe::kernels::cuda
