#include <cuda_bf16.h>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/expert_epilogue.cuh"
#include "kernels/cuda/rows.cuh"
#include "kernels/cuda/vector_access.cuh"

namespace moe::kernels::cuda {
namespace {

// A block per row (striding when rows exceed the grid): the row's group is looked up
// once (binary search over the offsets), and the threads walk its columns, coalesced,
// V at a time (vector_access.cuh).
template <int V>
__global__ void expert_hidden_kernel(const __nv_bfloat16* z, const float* const* biases, const std::int64_t* offsets,
                                     int groups, std::int64_t rows, std::int64_t width, bool gated, Act act,
                                     float* pre, float* hidden, __nv_bfloat16* hidden_bf16) {
  const std::int64_t z_width = gated ? 2 * width : width;
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* bias = biases[group_of_row(offsets, groups, r)];
    const __nv_bfloat16* zr = z + r * z_width;
    float* pre_r = pre ? pre + r * z_width : nullptr;
    for (std::int64_t j = threadIdx.x * std::int64_t{V}; j < width; j += blockDim.x * std::int64_t{V}) {
      float gate[V], up[V] = {}, h[V];
      load<V>(zr + j, gate);
      if (gated) load<V>(zr + width + j, up);
      for (int i = 0; i < V; ++i) {
        gate[i] += bias ? bias[j + i] : 0.0f;
        if (gated) up[i] += bias ? bias[width + j + i] : 0.0f;
        h[i] = expert_hidden_value(gate[i], up[i], gated, act);
      }
      if (pre_r) {
        store<V>(pre_r + j, gate);
        if (gated) store<V>(pre_r + width + j, up);
      }
      if (hidden) store<V>(hidden + r * width + j, h);
      store<V>(hidden_bf16 + r * width + j, h);
    }
  }
}

template <int V>
__global__ void expert_output_kernel(const __nv_bfloat16* y, const float* const* biases, const std::int64_t* offsets,
                                     int groups, std::int64_t rows, std::int64_t cols, Act act, float* pre,
                                     float* out) {
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* bias = biases[group_of_row(offsets, groups, r)];
    for (std::int64_t j = threadIdx.x * std::int64_t{V}; j < cols; j += blockDim.x * std::int64_t{V}) {
      const std::int64_t i = r * cols + j;
      float z[V], a[V];
      load<V>(y + i, z);
      for (int e = 0; e < V; ++e) z[e] += bias ? bias[j + e] : 0.0f, a[e] = activate(act, z[e]);
      if (pre) store<V>(pre + i, z);
      store<V>(out + i, a);
    }
  }
}

// A block per output row. Each entry's bias is looked up once per row, by the block's
// threads together, into shared memory (rows of at most kStagedEntries entries; top-k
// gives k, and a longer row looks each up as it goes), then the threads walk the
// columns V at a time, summing the entries' terms in entry order.
constexpr int kStagedEntries = 64;

template <int V>
__global__ void combine_expert_output_kernel(const __nv_bfloat16* y, const float* const* biases,
                                             const std::int64_t* group_offsets, int groups, std::int64_t first,
                                             std::int64_t cols, std::int64_t n_out, const std::int32_t* offsets,
                                             const std::int32_t* sources, const float* weights, float* dst) {
  __shared__ const float* entry_bias[kStagedEntries];
  for (std::int64_t r = blockIdx.x; r < n_out; r += gridDim.x) {
    const std::int32_t begin = offsets[r], end = offsets[r + 1];
    const bool staged = end - begin <= kStagedEntries;
    __syncthreads();  // the previous row's readers are done with entry_bias
    if (staged)
      for (std::int32_t a = begin + static_cast<std::int32_t>(threadIdx.x); a < end; a += blockDim.x)
        entry_bias[a - begin] = biases[group_of_row(group_offsets, groups, sources[a] - first)];
    __syncthreads();
    for (std::int64_t j = threadIdx.x * std::int64_t{V}; j < cols; j += blockDim.x * std::int64_t{V}) {
      float sum[V] = {};
      for (std::int32_t a = begin; a < end; ++a) {
        const std::int64_t g = sources[a] - first;
        const float* bias = staged ? entry_bias[a - begin] : biases[group_of_row(group_offsets, groups, g)];
        const float w = entry_weight(weights, a);
        float v[V];
        load<V>(y + g * cols + j, v);
        for (int e = 0; e < V; ++e) {
          v[e] += bias ? bias[j + e] : 0.0f;  // the output epilogue's value …
          sum[e] += w * v[e];                 // … and the combine's sum
        }
      }
      store<V>(dst + r * cols + j, sum);
    }
  }
}

}  // namespace

void launch_expert_hidden(const void* z, const float* const* biases, const std::int64_t* offsets, int groups,
                          std::int64_t rows, std::int64_t width, bool gated, Act act, float* pre, float* hidden,
                          void* hidden_bf16, Stream stream) {
  if (rows * width == 0) return;
  const auto* z16 = static_cast<const __nv_bfloat16*>(z);
  auto* h16 = static_cast<__nv_bfloat16*>(hidden_bf16);
  at_vector_width(vector_width(width, {{z, 2}, {pre, 4}, {hidden, 4}, {hidden_bf16, 2}}), [&](auto v) {
    expert_hidden_kernel<decltype(v)::value><<<row_blocks(rows), row_threads(width, v), 0, stream>>>(
        z16, biases, offsets, groups, rows, width, gated, act, pre, hidden, h16);
  });
  MOE_CHECK_LAUNCH();
}

void launch_expert_output(const void* y, const float* const* biases, const std::int64_t* offsets, int groups,
                          std::int64_t rows, std::int64_t cols, Act act, float* pre, float* out, Stream stream) {
  if (rows * cols == 0) return;
  const auto* y16 = static_cast<const __nv_bfloat16*>(y);
  at_vector_width(vector_width(cols, {{y, 2}, {pre, 4}, {out, 4}}), [&](auto v) {
    expert_output_kernel<decltype(v)::value><<<row_blocks(rows), row_threads(cols, v), 0, stream>>>(
        y16, biases, offsets, groups, rows, cols, act, pre, out);
  });
  MOE_CHECK_LAUNCH();
}

void launch_combine_expert_output(const void* y, const float* const* biases, const std::int64_t* group_offsets,
                                  int groups, std::int64_t first, std::int64_t cols, std::int64_t n_out,
                                  const std::int32_t* offsets, const std::int32_t* sources, const float* weights,
                                  float* dst, Stream stream) {
  if (n_out * cols == 0) return;
  const auto* y16 = static_cast<const __nv_bfloat16*>(y);
  at_vector_width(vector_width(cols, {{y, 2}, {dst, 4}}), [&](auto v) {
    combine_expert_output_kernel<decltype(v)::value><<<row_blocks(n_out), row_threads(cols, v), 0, stream>>>(
        y16, biases, group_offsets, groups, first, cols, n_out, offsets, sources, weights, dst);
  });
  MOE_CHECK_LAUNCH();
}

}  // namespace moe::kernels::cuda
