// The combine's backward as one kernel template (device code: include from .cu files
// only), for every form of its source rows: float32 rows (launch_combine_backward), and
// a bf16 training step's kept expert products, bf16 without their output bias, which
// is added as they are read (launch_combine_expert_output_backward).
//
// A block per output row (grid-stride). The row's entries go kEntryBatch at a time:
// each thread walks the row V elements at a time, reading ∂L/∂dst once for the batch,
// writing each entry's ∂L/∂src and adding its terms of each entry's weight gradient in
// float64 (combine_backward_term, rows.cuh); then each entry's dot product is reduced
// over the block, a warp's lanes by shuffles and the warps in order (a fixed order for
// a given width). Before, each entry reread the row one element a thread and reduced
// through shared memory with eight barriers (72 a row at top-8).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/rows.cuh"
#include "kernels/cuda/vector_access.cuh"

namespace moe::kernels::cuda {

constexpr int kEntryBatch = 8;

// Source rows of float32 (`width` apart): no bias.
struct FloatSourceRows {
  const float* rows;
  __device__ const float* bias_of(std::int32_t) const { return nullptr; }
  template <int V>
  __device__ void load_row(std::int32_t row, std::int64_t width, std::int64_t h, float (&x)[V]) const {
    load<V>(rows + static_cast<std::int64_t>(row) * width + h, x);
  }
};

// Source: d_src[sources[a]] = weights[a] · d_dst[r] and d_weights[a] = d_dst[r] ·
// (source row + its bias) for the entries a of each output row r < n_out; d_weights
// may be null.
template <int V, class Source>
__global__ void combine_backward_kernel(Source source, const float* d_dst, std::int64_t width, std::int64_t n_out,
                                        const std::int32_t* offsets, const std::int32_t* sources, const float* weights,
                                        float* d_src, float* d_weights) {
  __shared__ double warp_dots[kEntryBatch][kBlock / 32];
  __shared__ const float* entry_bias[kEntryBatch];
  const int warps = static_cast<int>(blockDim.x) / 32, warp = static_cast<int>(threadIdx.x) / 32,
            lane = static_cast<int>(threadIdx.x) % 32;
  for (std::int64_t r = blockIdx.x; r < n_out; r += gridDim.x) {
    for (std::int32_t begin = offsets[r]; begin < offsets[r + 1]; begin += kEntryBatch) {
      const int count = offsets[r + 1] - begin < kEntryBatch ? offsets[r + 1] - begin : kEntryBatch;
      if (static_cast<int>(threadIdx.x) < count)
        entry_bias[threadIdx.x] = source.bias_of(sources[begin + static_cast<std::int32_t>(threadIdx.x)]);
      // The batch's source rows, weights and biases in registers for the walk (its stores
      // to d_src would otherwise make the compiler reload them every step).
      std::int32_t row[kEntryBatch];
      float w[kEntryBatch];
      const float* bias[kEntryBatch];
#pragma unroll
      for (int i = 0; i < kEntryBatch; ++i)
        if (i < count) row[i] = sources[begin + i], w[i] = entry_weight(weights, begin + i);
      __syncthreads();
#pragma unroll
      for (int i = 0; i < kEntryBatch; ++i)
        if (i < count) bias[i] = entry_bias[i];
      double dot[kEntryBatch] = {};
      for (std::int64_t h = threadIdx.x * std::int64_t{V}; h < width; h += blockDim.x * std::int64_t{V}) {
        float d[V];
        load<V>(d_dst + r * width + h, d);
#pragma unroll
        for (int i = 0; i < kEntryBatch; ++i) {
          if (i >= count) continue;
          float x[V], g[V];
          source.template load_row<V>(row[i], width, h, x);
          if (bias[i])
            for (int e = 0; e < V; ++e) x[e] += bias[i][h + e];
          for (int e = 0; e < V; ++e) dot[i] += combine_backward_term(d[e], x[e], w[i], g[e]);
          store<V>(d_src + static_cast<std::int64_t>(row[i]) * width + h, g);
        }
      }
      if (d_weights) {
#pragma unroll
        for (int i = 0; i < kEntryBatch; ++i) {
          if (i >= count) continue;
          double v = dot[i];
          for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
          if (lane == 0) warp_dots[i][warp] = v;
        }
        __syncthreads();
        if (static_cast<int>(threadIdx.x) < count) {
          double sum = 0.0;
          for (int k = 0; k < warps; ++k) sum += warp_dots[threadIdx.x][k];
          d_weights[begin + static_cast<std::int32_t>(threadIdx.x)] = static_cast<float>(sum);
        }
      }
      __syncthreads();  // before the next batch overwrites entry_bias and warp_dots
    }
  }
}

// The kernel launched over n_out rows, V elements a thread (vector_width's choice for
// the width and every row pointer, the source's included), row_threads' threads a block.
template <class Source>
void launch_combine_backward_kernel(const Source& source, int v, const float* d_dst, std::int64_t width,
                                    std::int64_t n_out, const std::int32_t* offsets, const std::int32_t* sources,
                                    const float* weights, float* d_src, float* d_weights, Stream stream) {
  if (n_out == 0) return;
  at_vector_width(v, [&](auto vv) {
    combine_backward_kernel<decltype(vv)::value><<<row_blocks(n_out), row_threads(width, vv), 0, stream>>>(
        source, d_dst, width, n_out, offsets, sources, weights, d_src, d_weights);
  });
  MOE_CHECK_LAUNCH();
}

}  // namespace moe::kernels::cuda
