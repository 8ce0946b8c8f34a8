#include <cuda_bf16.h>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/reductions.cuh"
#include "kernels/cuda/vector_access.cuh"

namespace moe::kernels::cuda {
namespace {

// A block (kColumnsPerBlock, kColumnLanes) over columns [blockIdx.x·32·V, +32·V) of the
// rows [begin, end), V adjacent columns a thread (one load of V elements: a warp reads
// 32·V of a row at once): partials[chunk·cols + c] = column_chunk_sum's value for that
// chunk. Each column's lanes and tree are the same whatever V, so are its bits.
template <int V, class T>
__device__ void chunk_column_sums(const T* m, std::int64_t begin, std::int64_t end, std::int64_t cols,
                                  std::int64_t chunk, double* partials) {
  __shared__ double lane_sums[kColumnLanes][kColumnsPerBlock * V];
  const std::int64_t c = (blockIdx.x * static_cast<std::int64_t>(kColumnsPerBlock) + threadIdx.x) * V;
  double sum[V] = {};
  if (c < cols) {
    // Four rows' loads in flight before their additions, which keep the rows' order (the
    // same bits). Against one at a time it moved the mid step's bf16 bias-gradient sums
    // from 29.2 to 28.2 µs (H200, ncu, 2026-11-28): the loads' latency was not what held
    // them at about 60% of the memory's speed (see lane_slot).
    constexpr int kRowsInFlight = 4;
    std::int64_t r = begin + threadIdx.y;
    for (; r + (kRowsInFlight - 1) * kColumnLanes < end; r += kRowsInFlight * kColumnLanes) {
      float values[kRowsInFlight][V];
      for (int u = 0; u < kRowsInFlight; ++u) load<V>(m + (r + u * kColumnLanes) * cols + c, values[u]);
      for (int u = 0; u < kRowsInFlight; ++u)
        for (int e = 0; e < V; ++e) sum[e] += values[u][e];
    }
    for (; r < end; r += kColumnLanes) {
      float values[V];
      load<V>(m + r * cols + c, values);  // exact: bf16 and float widen to double without rounding
      for (int e = 0; e < V; ++e) sum[e] += values[e];
    }
  }
  for (int e = 0; e < V; ++e) lane_sums[threadIdx.y][lane_slot(e)] = sum[e];
  __syncthreads();
  add_lanes_as_tree(lane_sums, V);
  if (threadIdx.y == 0 && c < cols)
    for (int e = 0; e < V; ++e) partials[chunk * cols + c + e] = lane_sums[0][lane_slot(e)];
}

// Chunk first_chunk + blockIdx.y of m's rows. One column a thread: these are the
// router's [T, E] sums, E columns wide.
__global__ void column_chunk_sums_kernel(const float* m, std::int64_t rows, std::int64_t cols, std::int64_t first_chunk,
                                         double* partials) {
  const std::int64_t chunk = first_chunk + blockIdx.y;
  const std::int64_t begin = chunk * kColumnChunkRows;
  chunk_column_sums<1>(m, begin, begin + kColumnChunkRows < rows ? begin + kColumnChunkRows : rows, cols, chunk,
                       partials);
}

// Chunk first_chunk + blockIdx.y of the table's: the bias gradients' sums, over rows as
// wide as a layer (H, or F and 2F), V columns a thread.
template <int V, class T>
__global__ void table_chunk_sums_kernel(const T* m, std::int64_t cols, const std::int64_t* chunk_rows,
                                        std::int64_t first_chunk, double* partials) {
  const std::int64_t chunk = first_chunk + blockIdx.y;
  chunk_column_sums<V>(m, chunk_rows[2 * chunk], chunk_rows[2 * chunk + 1], cols, chunk, partials);
}

// Thread per (group, column): the group's chunks in order, added into its sums.
__global__ void finish_grouped_column_sums_kernel(const double* partials, std::int64_t cols,
                                                  const std::int64_t* group_chunks, float* const* sums, int groups) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= groups * cols) return;
  const std::int64_t g = i / cols, c = i % cols;
  float* into = sums[g];
  if (!into) return;
  double sum = 0.0;
  for (std::int64_t chunk = group_chunks[g]; chunk < group_chunks[g + 1]; ++chunk) sum += partials[chunk * cols + c];
  into[c] = static_cast<float>(into[c] + sum);
}

// The chunks' partials of each column, in chunk order.
template <class Sum>
__global__ void finish_column_sums_kernel(const double* partials, std::int64_t chunks, std::int64_t cols, Sum* sums,
                                          bool add) {
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  double sum = 0.0;
  for (std::int64_t chunk = 0; chunk < chunks; ++chunk) sum += partials[chunk * cols + c];
  sums[c] = add ? static_cast<Sum>(sums[c] + sum) : static_cast<Sum>(sum);
}

template <class Sum>
void column_sums(const float* m, std::int64_t rows, std::int64_t cols, double* partials, Sum* sums, bool add,
                 Stream stream) {
  if (cols == 0) return;
  const std::int64_t chunks = column_chunks(rows);
  constexpr std::int64_t kMaxGridY = 65535;
  for (std::int64_t first = 0; first < chunks; first += kMaxGridY) {
    const std::int64_t count = chunks - first < kMaxGridY ? chunks - first : kMaxGridY;
    const dim3 grid(static_cast<unsigned>((cols + kColumnsPerBlock - 1) / kColumnsPerBlock), static_cast<unsigned>(count));
    column_chunk_sums_kernel<<<grid, dim3(kColumnsPerBlock, kColumnLanes), 0, stream>>>(m, rows, cols, first, partials);
    MOE_CHECK_LAUNCH();
  }
  finish_column_sums_kernel<<<blocks_for(cols, kBlock), kBlock, 0, stream>>>(partials, chunks, cols, sums, add);
  MOE_CHECK_LAUNCH();
}

// Elements a block: 32 a thread. The order of additions is fixed by n alone (a thread's
// elements in turn, the block's threads as a tree, the blocks in order on the host).
// At 65 536 a block (until after the sixth GPU check) a 4M-element weight's gradient
// was 64 blocks, under the H200's 132 multiprocessors, one block each: few loads in
// flight. Not profiled; the mid step's clipping and AdamW took 1.19 ms where their
// bytes need about 0.5 at the memory's speed.
constexpr std::int64_t kPerBlock = std::int64_t{1} << 13;

__global__ void sum_squares_kernel(const float* x, std::int64_t n, double* partials) {
  __shared__ double partial[kBlock];
  const std::int64_t begin = blockIdx.x * kPerBlock;
  const std::int64_t end = begin + kPerBlock < n ? begin + kPerBlock : n;
  double sum = 0.0;
#pragma unroll 8
  for (std::int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) sum += double(x[i]) * double(x[i]);
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = partial[0];
}

}  // namespace

void launch_column_sums(const float* m, std::int64_t rows, std::int64_t cols, double* partials, double* sums,
                        Stream stream) {
  column_sums(m, rows, cols, partials, sums, false, stream);
}

void launch_add_column_sums(const float* m, std::int64_t rows, std::int64_t cols, double* partials, float* sums,
                            Stream stream) {
  column_sums(m, rows, cols, partials, sums, true, stream);
}

namespace {

template <class T>
void add_grouped_column_sums(const T* m, std::int64_t cols, const std::int64_t* chunk_rows, std::int64_t chunks,
                             const std::int64_t* group_chunks, float* const* sums, int groups, double* partials,
                             Stream stream) {
  if (cols == 0 || chunks == 0) return;
  constexpr std::int64_t kMaxGridY = 65535;
  at_vector_width(vector_width(cols, {{m, static_cast<int>(sizeof(T))}}), [&](auto v) {
    constexpr int V = decltype(v)::value;
    const auto column_blocks = static_cast<unsigned>((cols + kColumnsPerBlock * V - 1) / (kColumnsPerBlock * V));
    for (std::int64_t first = 0; first < chunks; first += kMaxGridY) {
      const std::int64_t count = chunks - first < kMaxGridY ? chunks - first : kMaxGridY;
      table_chunk_sums_kernel<V, T><<<dim3(column_blocks, static_cast<unsigned>(count)),
                                      dim3(kColumnsPerBlock, kColumnLanes), 0, stream>>>(m, cols, chunk_rows, first,
                                                                                         partials);
      MOE_CHECK_LAUNCH();
    }
  });
  finish_grouped_column_sums_kernel<<<blocks_for(groups * cols, kBlock), kBlock, 0, stream>>>(partials, cols,
                                                                                              group_chunks, sums, groups);
  MOE_CHECK_LAUNCH();
}

}  // namespace

void launch_add_grouped_column_sums(const float* m, std::int64_t cols, const std::int64_t* chunk_rows,
                                    std::int64_t chunks, const std::int64_t* group_chunks, float* const* sums,
                                    int groups, double* partials, Stream stream) {
  add_grouped_column_sums(m, cols, chunk_rows, chunks, group_chunks, sums, groups, partials, stream);
}

void launch_add_grouped_column_sums_bf16(const void* m, std::int64_t cols, const std::int64_t* chunk_rows,
                                         std::int64_t chunks, const std::int64_t* group_chunks, float* const* sums,
                                         int groups, double* partials, Stream stream) {
  add_grouped_column_sums(static_cast<const __nv_bfloat16*>(m), cols, chunk_rows, chunks, group_chunks, sums, groups,
                          partials, stream);
}

void launch_finish_grouped_column_sums(const double* partials, std::int64_t cols, const std::int64_t* group_chunks,
                                       float* const* sums, int groups, Stream stream) {
  if (cols == 0 || groups == 0) return;
  finish_grouped_column_sums_kernel<<<blocks_for(groups * cols, kBlock), kBlock, 0, stream>>>(partials, cols,
                                                                                              group_chunks, sums, groups);
  MOE_CHECK_LAUNCH();
}

int sum_squares_blocks(std::int64_t n) { return static_cast<int>((n + kPerBlock - 1) / kPerBlock); }

void launch_sum_squares(const float* x, std::int64_t n, double* partials, Stream stream) {
  const int blocks = sum_squares_blocks(n);
  if (blocks == 0) return;
  sum_squares_kernel<<<blocks, kBlock, 0, stream>>>(x, n, partials);
  MOE_CHECK_LAUNCH();
}

}  // namespace moe::kernels::cuda
