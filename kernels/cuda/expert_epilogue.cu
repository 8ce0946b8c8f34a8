#include <cuda_bf16.h>

#include "kernels/cuda/combine_backward.cuh"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/expert_epilogue.cuh"
#include "kernels/cuda/reductions.cuh"
#include "kernels/cuda/rows.cuh"
#include "kernels/cuda/vector_access.cuh"

namespace moe::kernels::cuda {
namespace {

// A tile of kRowTile rows a block (striding when tiles exceed the grid), the
// rows' biases looked up once for the tile (expert_epilogue.cuh), and the threads walk
// the columns, coalesced, V at a time (vector_access.cuh), loading every row of the
// tile before computing any. A bias is loaded once for the rows of its group.
constexpr int kTile = kRowTile;

// The V values at column j of row i's bias into b (zeros for a null bias), unless row
// i - 1 had the same bias: its values are in b already.
template <int V>
__device__ inline void bias_for_row(const float* const (&bias)[kTile], int i, std::int64_t j, float (&b)[V]) {
  if (i > 0 && bias[i] == bias[i - 1]) return;
  if (bias[i])
    load<V>(bias[i] + j, b);
  else
    for (int e = 0; e < V; ++e) b[e] = 0.0f;
}

template <int V, bool kGated>
__global__ void expert_hidden_kernel(const __nv_bfloat16* z, const float* const* biases, const std::int64_t* offsets,
                                     int groups, std::int64_t rows, std::int64_t width, Act act, __nv_bfloat16* pre,
                                     __nv_bfloat16* hidden) {
  constexpr int kParts = kGated ? 2 : 1;  // glu rows hold the gate's columns, then the up's
  const std::int64_t z_width = kParts * width;
  for (std::int64_t first = blockIdx.x * std::int64_t{kTile}; first < rows; first += gridDim.x * std::int64_t{kTile}) {
    const int n = rows - first < kTile ? static_cast<int>(rows - first) : kTile;
    const float* bias[kTile];
    tile_row_biases<kTile>(biases, offsets, groups, first, n, bias);
    for (std::int64_t j = threadIdx.x * std::int64_t{V}; j < width; j += blockDim.x * std::int64_t{V}) {
      float v[kTile][kParts][V];  // each row's gate (and up) values
#pragma unroll
      for (int i = 0; i < kTile; ++i)
        if (i < n)
          for (int part = 0; part < kParts; ++part) load<V>(z + (first + i) * z_width + part * width + j, v[i][part]);
      float b[kParts][V];
#pragma unroll
      for (int i = 0; i < kTile; ++i) {
        if (i >= n) continue;
        const std::int64_t r = first + i;
        float h[V];
        for (int part = 0; part < kParts; ++part) {
          bias_for_row<V>(bias, i, part * width + j, b[part]);
          for (int e = 0; e < V; ++e) v[i][part][e] += b[part][e];
        }
        for (int e = 0; e < V; ++e) h[e] = expert_hidden_value(v[i][0][e], v[i][kParts - 1][e], kGated, act);
        if (pre)
          for (int part = 0; part < kParts; ++part) store<V>(pre + r * z_width + part * width + j, v[i][part]);
        store<V>(hidden + r * width + j, h);
      }
    }
  }
}

// expert_hidden_kernel's values with a thread per V elements of a row, grid-striding
// over every row's elements as the backward below does (the width is a multiple of V):
// each thread finds its row's group (group_of_row) and loads the group's bias itself,
// where the tiles find a group once for four rows. The same additions (a null bias adds
// zeros, as bias_for_row's do) and the same rounding, so the same bits: the trial of
// MOE_HIDDEN_EPILOGUE_BY_ELEMENT=1 (environment.cuh says why).
template <int V, bool kGated>
__global__ void expert_hidden_by_element_kernel(const __nv_bfloat16* z, const float* const* biases,
                                                const std::int64_t* offsets, int groups, std::int64_t rows,
                                                std::int64_t width, Act act, __nv_bfloat16* pre,
                                                __nv_bfloat16* hidden) {
  constexpr int kParts = kGated ? 2 : 1;
  const std::int64_t z_width = kParts * width, n = rows * width;
  for (std::int64_t i = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) * V; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x * V) {
    const std::int64_t r = i / width, j = i % width;
    float v[kParts][V];
    for (int part = 0; part < kParts; ++part) load<V>(z + r * z_width + part * width + j, v[part]);
    const float* bias = biases[group_of_row(offsets, groups, r)];
    for (int part = 0; part < kParts; ++part) {
      float b[V];
      if (bias)
        load<V>(bias + part * width + j, b);
      else
        for (int e = 0; e < V; ++e) b[e] = 0.0f;
      for (int e = 0; e < V; ++e) v[part][e] += b[e];
    }
    float h[V];
    for (int e = 0; e < V; ++e) h[e] = expert_hidden_value(v[0][e], v[kParts - 1][e], kGated, act);
    if (pre)
      for (int part = 0; part < kParts; ++part) store<V>(pre + r * z_width + part * width + j, v[part]);
    store<V>(hidden + i, h);
  }
}

// Element-wise over the hidden's elements, V at a time within a row (the width is a
// multiple of V): each reads its ∂L/∂hidden and its pre-activations and writes ∂L/∂z.
template <int V, bool kGated>
__global__ void expert_hidden_backward_kernel(const __nv_bfloat16* pre, const float* d_hidden, std::int64_t rows,
                                              std::int64_t width, Act act, __nv_bfloat16* dz16) {
  constexpr int kParts = kGated ? 2 : 1;
  const std::int64_t z_width = kParts * width, n = rows * width;
  for (std::int64_t i = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) * V; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x * V) {
    const std::int64_t r = i / width, j = i % width;
    float dh[V], z[kParts][V], g[kParts][V];
    load<V>(d_hidden + i, dh);
    for (int part = 0; part < kParts; ++part) load<V>(pre + r * z_width + part * width + j, z[part]);
    for (int e = 0; e < V; ++e) {
      float d_up = 0.0f;
      expert_hidden_grad(dh[e], z[0][e], z[kParts - 1][e], kGated, act, g[0][e], d_up);
      if constexpr (kGated) g[1][e] = d_up;
    }
    for (int part = 0; part < kParts; ++part) store<V>(dz16 + r * z_width + part * width + j, g[part]);
  }
}

// expert_hidden_backward_kernel over one chunk of rows a block row (blockIdx.y), with
// the column sums of what it writes: a block (kColumnsPerBlock, kColumnLanes) takes V
// adjacent hidden columns a thread, lane l the chunk's rows l, l + kColumnLanes, …, and
// sums the bf16 values it stores (widened), then the lanes by add_lanes_as_tree: the
// order of reductions.cu's chunk_column_sums, so the partials are the same bits.
template <int V, bool kGated>
__global__ void expert_hidden_backward_sums_kernel(const __nv_bfloat16* pre, const float* d_hidden, std::int64_t width,
                                                   Act act, __nv_bfloat16* dz16, const std::int64_t* chunk_rows,
                                                   std::int64_t first_chunk, double* partials) {
  constexpr int kParts = kGated ? 2 : 1;
  constexpr int kBlockColumns = kColumnsPerBlock * V;
  __shared__ double lane_sums[kColumnLanes][kBlockColumns];
  const std::int64_t z_width = kParts * width, chunk = first_chunk + blockIdx.y;
  const std::int64_t begin = chunk_rows[2 * chunk], end = chunk_rows[2 * chunk + 1];
  const std::int64_t j = (blockIdx.x * std::int64_t{kColumnsPerBlock} + threadIdx.x) * V;
  double sum[kParts][V] = {};
  if (j < width)
    for (std::int64_t r = begin + threadIdx.y; r < end; r += kColumnLanes) {
      float dh[V], z[kParts][V], g[kParts][V];
      load<V>(d_hidden + r * width + j, dh);
      for (int part = 0; part < kParts; ++part) load<V>(pre + r * z_width + part * width + j, z[part]);
      for (int e = 0; e < V; ++e) {
        float d_up = 0.0f;
        expert_hidden_grad(dh[e], z[0][e], z[kParts - 1][e], kGated, act, g[0][e], d_up);
        if constexpr (kGated) g[1][e] = d_up;
      }
      for (int part = 0; part < kParts; ++part) {
        store<V>(dz16 + r * z_width + part * width + j, g[part]);
        for (int e = 0; e < V; ++e) sum[part][e] += __bfloat162float(__float2bfloat16_rn(g[part][e]));
      }
    }
  for (int part = 0; part < kParts; ++part) {
    for (int e = 0; e < V; ++e) lane_sums[threadIdx.y][lane_slot(e)] = sum[part][e];
    __syncthreads();
    add_lanes_as_tree(lane_sums, V);
    if (threadIdx.y == 0 && j < width)
      for (int e = 0; e < V; ++e) partials[chunk * z_width + part * width + j + e] = lane_sums[0][lane_slot(e)];
    __syncthreads();  // the next part reuses lane_sums
  }
}

template <int V>
__global__ void expert_output_kernel(const __nv_bfloat16* y, const float* const* biases, const std::int64_t* offsets,
                                     int groups, std::int64_t rows, std::int64_t cols, Act act, float* pre,
                                     float* out) {
  for (std::int64_t first = blockIdx.x * std::int64_t{kTile}; first < rows; first += gridDim.x * std::int64_t{kTile}) {
    const int n = rows - first < kTile ? static_cast<int>(rows - first) : kTile;
    const float* bias[kTile];
    tile_row_biases<kTile>(biases, offsets, groups, first, n, bias);
    for (std::int64_t j = threadIdx.x * std::int64_t{V}; j < cols; j += blockDim.x * std::int64_t{V}) {
      float z[kTile][V];
#pragma unroll
      for (int i = 0; i < kTile; ++i)
        if (i < n) load<V>(y + (first + i) * cols + j, z[i]);
      float b[V];
#pragma unroll
      for (int i = 0; i < kTile; ++i) {
        if (i >= n) continue;
        const std::int64_t at = (first + i) * cols + j;
        bias_for_row<V>(bias, i, j, b);
        float a[V];
        for (int e = 0; e < V; ++e) z[i][e] += b[e], a[e] = activate(act, z[i][e]);
        if (pre) store<V>(pre + at, z[i]);
        store<V>(out + at, a);
      }
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

// The experts' bf16 products as the combine's backward reads them: row s is y[s −
// first] plus the output bias of its group, as combine_expert_output_kernel adds it.
struct Bf16ProductsWithBias {
  const __nv_bfloat16* y;
  const float* const* biases;
  const std::int64_t* group_offsets;
  int groups;
  std::int64_t first;
  __device__ const float* bias_of(std::int32_t row) const {
    return biases[group_of_row(group_offsets, groups, row - first)];
  }
  template <int V>
  __device__ void load_row(std::int32_t row, std::int64_t width, std::int64_t h, float (&x)[V]) const {
    load<V>(y + (row - first) * width + h, x);
  }
};

}  // namespace

void launch_expert_hidden(const void* z, const float* const* biases, const std::int64_t* offsets, int groups,
                          std::int64_t rows, std::int64_t width, bool gated, Act act, void* pre_bf16,
                          void* hidden_bf16, Stream stream, bool by_element) {
  if (rows * width == 0) return;
  const auto* z16 = static_cast<const __nv_bfloat16*>(z);
  auto* pre16 = static_cast<__nv_bfloat16*>(pre_bf16);
  auto* h16 = static_cast<__nv_bfloat16*>(hidden_bf16);
  at_vector_width(vector_width(width, {{z, 2}, {pre_bf16, 2}, {hidden_bf16, 2}}), [&](auto v) {
    constexpr int V = decltype(v)::value;
    if (by_element) {
      const auto kernel =
          gated ? expert_hidden_by_element_kernel<V, true> : expert_hidden_by_element_kernel<V, false>;
      kernel<<<blocks_for(rows * width / V, kBlock), kBlock, 0, stream>>>(z16, biases, offsets, groups, rows, width,
                                                                          act, pre16, h16);
      return;
    }
    const auto kernel = gated ? expert_hidden_kernel<V, true> : expert_hidden_kernel<V, false>;
    kernel<<<tile_blocks(rows), row_threads(width, v), 0, stream>>>(z16, biases, offsets, groups, rows, width, act,
                                                                   pre16, h16);
  });
  MOE_CHECK_LAUNCH();
}

void launch_expert_hidden_backward(const void* pre_bf16, const float* d_hidden, std::int64_t rows, std::int64_t width,
                                   bool gated, Act act, void* dz_bf16, Stream stream) {
  if (rows * width == 0) return;
  const auto* pre16 = static_cast<const __nv_bfloat16*>(pre_bf16);
  auto* dz16 = static_cast<__nv_bfloat16*>(dz_bf16);
  at_vector_width(vector_width(width, {{pre_bf16, 2}, {d_hidden, 4}, {dz_bf16, 2}}), [&](auto v) {
    constexpr int V = decltype(v)::value;
    const auto kernel = gated ? expert_hidden_backward_kernel<V, true> : expert_hidden_backward_kernel<V, false>;
    kernel<<<blocks_for(rows * width / V, kBlock), kBlock, 0, stream>>>(pre16, d_hidden, rows, width, act, dz16);
  });
  MOE_CHECK_LAUNCH();
}

void launch_expert_hidden_backward_with_sums(const void* pre_bf16, const float* d_hidden, std::int64_t rows,
                                             std::int64_t width, bool gated, Act act, void* dz_bf16,
                                             const std::int64_t* chunk_rows, std::int64_t chunks,
                                             const std::int64_t* group_chunks, float* const* sums, int groups,
                                             double* partials, Stream stream) {
  if (rows * width == 0 || chunks == 0) return;
  const auto* pre16 = static_cast<const __nv_bfloat16*>(pre_bf16);
  auto* dz16 = static_cast<__nv_bfloat16*>(dz_bf16);
  at_vector_width(vector_width(width, {{pre_bf16, 2}, {d_hidden, 4}, {dz_bf16, 2}}), [&](auto v) {
    constexpr int V = decltype(v)::value;
    const auto kernel =
        gated ? expert_hidden_backward_sums_kernel<V, true> : expert_hidden_backward_sums_kernel<V, false>;
    constexpr std::int64_t kMaxGridY = 65535;
    const auto column_blocks = static_cast<unsigned>((width + kColumnsPerBlock * V - 1) / (kColumnsPerBlock * V));
    for (std::int64_t first = 0; first < chunks; first += kMaxGridY) {
      const std::int64_t count = chunks - first < kMaxGridY ? chunks - first : kMaxGridY;
      kernel<<<dim3(column_blocks, static_cast<unsigned>(count)), dim3(kColumnsPerBlock, kColumnLanes), 0, stream>>>(
          pre16, d_hidden, width, act, dz16, chunk_rows, first, partials);
      MOE_CHECK_LAUNCH();
    }
  });
  launch_finish_grouped_column_sums(partials, (gated ? 2 : 1) * width, group_chunks, sums, groups, stream);
}

void launch_expert_output(const void* y, const float* const* biases, const std::int64_t* offsets, int groups,
                          std::int64_t rows, std::int64_t cols, Act act, float* pre, float* out, Stream stream) {
  if (rows * cols == 0) return;
  const auto* y16 = static_cast<const __nv_bfloat16*>(y);
  at_vector_width(vector_width(cols, {{y, 2}, {pre, 4}, {out, 4}}), [&](auto v) {
    expert_output_kernel<decltype(v)::value><<<tile_blocks(rows), row_threads(cols, v), 0, stream>>>(
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

void launch_combine_expert_output_backward(const void* y, const float* const* biases,
                                           const std::int64_t* group_offsets, int groups, std::int64_t first,
                                           std::int64_t cols, std::int64_t n_out, const std::int32_t* offsets,
                                           const std::int32_t* sources, const float* weights, const float* d_dst,
                                           float* d_src, float* d_weights, Stream stream) {
  const Bf16ProductsWithBias products{static_cast<const __nv_bfloat16*>(y), biases, group_offsets, groups, first};
  launch_combine_backward_kernel(products, vector_width(cols, {{y, 2}, {d_dst, 4}, {d_src, 4}}), d_dst, cols, n_out,
                                 offsets, sources, weights, d_src, d_weights, stream);
}

}  // namespace moe::kernels::cuda
