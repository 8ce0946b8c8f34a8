#include <cuda_bf16.h>

#include "kernels/cuda/combine_backward.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/rows.cuh"
#include "kernels/cuda/vector_access.cuh"

namespace moe::kernels::cuda {
namespace {

// The gather: a tile of kRowTile rows a block (stream.cuh; grid-stride over tiles), the
// tile's row indices read first and every row's loads in flight before any store;
// threads over the row's elements, V at a time (vector_access.cuh). It writes float
// rows (dst), bf16 rows (dst16, rounded as to_bf16), or both from one read of the
// source; a null one is skipped. Each element as gather_element states it (rows.cuh).
template <int V>
__global__ void gather_kernel(const float* src, const std::int32_t* rows, std::int64_t n, std::int64_t width,
                              float* dst, __nv_bfloat16* dst16) {
  for (std::int64_t first = blockIdx.x * std::int64_t{kRowTile}; first < n;
       first += gridDim.x * std::int64_t{kRowTile}) {
    const int count = n - first < kRowTile ? static_cast<int>(n - first) : kRowTile;
    std::int32_t source[kRowTile];  // -1: past the rows, or a padding row (zeros)
#pragma unroll
    for (int i = 0; i < kRowTile; ++i) source[i] = i < count && !is_padding_row(rows, first + i) ? rows[first + i] : -1;
    for (std::int64_t h = threadIdx.x * std::int64_t{V}; h < width; h += blockDim.x * std::int64_t{V}) {
      float v[kRowTile][V] = {};
#pragma unroll
      for (int i = 0; i < kRowTile; ++i)
        if (i < count && source[i] >= 0) load<V>(src + static_cast<std::int64_t>(source[i]) * width + h, v[i]);
#pragma unroll
      for (int i = 0; i < kRowTile; ++i) {
        if (i >= count) continue;
        if (dst) store<V>(dst + (first + i) * width + h, v[i]);
        if (dst16) store<V>(dst16 + (first + i) * width + h, v[i]);
      }
    }
  }
}

template <int V>
__global__ void combine_kernel(const float* src, std::int64_t width, std::int64_t n_out, const std::int32_t* offsets,
                               const std::int32_t* sources, const float* weights, float* dst) {
  for (std::int64_t r = blockIdx.x; r < n_out; r += gridDim.x)
    for (std::int64_t h = threadIdx.x * std::int64_t{V}; h < width; h += blockDim.x * std::int64_t{V}) {
      float sum[V] = {};
      for (std::int32_t a = offsets[r]; a < offsets[r + 1]; ++a) {
        const float w = entry_weight(weights, a);
        float v[V];
        load<V>(src + static_cast<std::int64_t>(sources[a]) * width + h, v);
        for (int e = 0; e < V; ++e) sum[e] += w * v[e];
      }
      store<V>(dst + r * width + h, sum);
    }
}

__global__ void scatter_kernel(const float* values, const std::int32_t* positions, std::int64_t n, float* dst) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n; i += stride)
    scatter_element(values, positions, i, dst);
}

}  // namespace

void launch_gather_rows(const float* src, const std::int32_t* rows, std::int64_t n, std::int64_t width, float* dst,
                        Stream stream) {
  if (n == 0) return;
  launch_gather_rows_bf16(src, rows, n, width, dst, nullptr, stream);
}

void launch_gather_rows_bf16(const float* src, const std::int32_t* rows, std::int64_t n, std::int64_t width,
                             float* dst, void* dst_bf16, Stream stream) {
  if (n == 0) return;
  auto* dst16 = static_cast<__nv_bfloat16*>(dst_bf16);
  at_vector_width(vector_width(width, {{src, 4}, {dst, 4}, {dst_bf16, 2}}), [&](auto v) {
    gather_kernel<decltype(v)::value>
        <<<tile_blocks(n), row_threads(width, v), 0, stream>>>(src, rows, n, width, dst, dst16);
  });
  MOE_CHECK_LAUNCH();
}

void launch_combine_rows(const float* src, std::int64_t width, std::int64_t n_out, const std::int32_t* offsets,
                         const std::int32_t* sources, const float* weights, float* dst, Stream stream) {
  if (n_out == 0) return;
  at_vector_width(vector_width(width, {{src, 4}, {dst, 4}}), [&](auto v) {
    combine_kernel<decltype(v)::value>
        <<<row_blocks(n_out), row_threads(width, v), 0, stream>>>(src, width, n_out, offsets, sources, weights, dst);
  });
  MOE_CHECK_LAUNCH();
}

void launch_combine_backward(const float* d_dst, const float* src, std::int64_t width, std::int64_t n_out,
                             const std::int32_t* offsets, const std::int32_t* sources, const float* weights,
                             float* d_src, float* d_weights, Stream stream) {
  launch_combine_backward_kernel(FloatSourceRows{src}, vector_width(width, {{d_dst, 4}, {src, 4}, {d_src, 4}}), d_dst,
                                 width, n_out, offsets, sources, weights, d_src, d_weights, stream);
}

void launch_scatter(const float* values, const std::int32_t* positions, std::int64_t n, float* dst, Stream stream) {
  if (n == 0) return;
  const std::int64_t blocks = (n + kBlock - 1) / kBlock;
  scatter_kernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kBlock, 0, stream>>>(values, positions, n, dst);
  MOE_CHECK_LAUNCH();
}

}  // namespace moe::kernels::cuda
