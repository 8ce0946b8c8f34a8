// Column sums (aux loss, bias gradients) and the sum of squares (gradient norms), as
// parallel reductions whose order of additions is fixed by the data's shape alone, so
// results do not depend on the launch shape or the GPU:
//   column sums: rows cut into chunks of kColumnChunkRows; inside a chunk, lane l of
//   kColumnLanes sums rows l, l + kColumnLanes, ...; the lanes are added as a tree
//   (column_chunk_sum below, which the kernel computes); then chunks in order.
//   sum of squares: per-block partials summed in order on the host.
#pragma once

#include <cstdint>

#include "kernels/cuda/stream.cuh"
#include "kernels/host_device.hpp"

namespace moe::kernels::cuda {

constexpr int kColumnLanes = 8;             // threads per column in a block
constexpr int kColumnsPerBlock = 32;        // a warp's width of adjacent columns: coalesced reads
constexpr std::int64_t kColumnChunkRows = 256;

MOE_HD inline std::int64_t column_chunks(std::int64_t rows) { return (rows + kColumnChunkRows - 1) / kColumnChunkRows; }

#ifdef __CUDACC__
// Where thread x of a block (kColumnsPerBlock, kColumnLanes) keeps the lane sum of its
// e-th column in the block's [kColumnLanes][kColumnsPerBlock · V] shared array: column e
// of every thread, then e + 1, so that a warp's 32 threads touch 32 adjacent doubles.
// At x · V + e (until 2026-11-28) a warp's doubles lay 8 · V bytes apart, in two of the
// 32 banks at V = 8: a 16-way conflict on every store and add of the tree below, while
// the mid step's bf16 bias-gradient sums ran at about 60% of the memory's speed (28.2 µs
// with four rows' loads in flight, 29.2 with one; H200, ncu). Where a value is kept
// does not change what is added to what: the same bits.
__device__ inline int lane_slot(int e) { return e * kColumnsPerBlock + static_cast<int>(threadIdx.x); }

// A block's lane sums added as the tree of column_chunk_sum below, in place, so that
// lanes[0][lane_slot(e)] ends as the chunk's sum of thread x's column e: thread (x, y)
// adds its `per_thread` slots of lane y. Every thread of the block calls it, after
// writing its lane and a __syncthreads. The one tree of every column-sum kernel, so that
// they give the same bits.
template <int kColumns>
__device__ inline void add_lanes_as_tree(double (&lanes)[kColumnLanes][kColumns], int per_thread) {
  for (int stride = kColumnLanes / 2; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.y) < stride)
      for (int e = 0; e < per_thread; ++e) lanes[threadIdx.y][lane_slot(e)] += lanes[threadIdx.y + stride][lane_slot(e)];
    __syncthreads();
  }
}
#endif

// The sum of column c over the rows of one chunk, in the kernel's order of additions.
MOE_HD inline double column_chunk_sum(const float* m, std::int64_t rows, std::int64_t cols, std::int64_t c,
                                      std::int64_t chunk) {
  const std::int64_t begin = chunk * kColumnChunkRows;
  const std::int64_t end = begin + kColumnChunkRows < rows ? begin + kColumnChunkRows : rows;
  double lane[kColumnLanes];
  for (int l = 0; l < kColumnLanes; ++l) {
    lane[l] = 0.0;
    for (std::int64_t r = begin + l; r < end; r += kColumnLanes) lane[l] += m[r * cols + c];
  }
  for (int stride = kColumnLanes / 2; stride > 0; stride /= 2)
    for (int l = 0; l < stride; ++l) lane[l] += lane[l + stride];
  return lane[0];
}

// The whole column: chunks in order.
MOE_HD inline double column_sum(const float* m, std::int64_t rows, std::int64_t cols, std::int64_t c) {
  double sum = 0.0;
  for (std::int64_t chunk = 0; chunk < column_chunks(rows); ++chunk) sum += column_chunk_sum(m, rows, cols, c, chunk);
  return sum;
}

// sums[c] (device, float64) = column sums; or, for add_column_sums, float sums[c] += it.
// partials (device) holds column_chunks(rows) · cols doubles of scratch.
void launch_column_sums(const float* m, std::int64_t rows, std::int64_t cols, double* partials, double* sums,
                        Stream stream);
void launch_add_column_sums(const float* m, std::int64_t rows, std::int64_t cols, double* partials, float* sums,
                            Stream stream);
// launch_add_column_sums of several row groups of m at once, each group's sums with the
// bits that call gives it: chunk i covers rows [chunk_rows[2i], chunk_rows[2i+1]) of m
// (the groups' chunks of kColumnChunkRows from each group's first row, group after
// group), group g owns chunks [group_chunks[g], group_chunks[g+1]) and adds into
// sums[g] (null: skipped). All on the device; partials holds chunks · cols doubles.
void launch_add_grouped_column_sums(const float* m, std::int64_t cols, const std::int64_t* chunk_rows,
                                    std::int64_t chunks, const std::int64_t* group_chunks, float* const* sums,
                                    int groups, double* partials, Stream stream);
// The last step of launch_add_grouped_column_sums alone, for a kernel that wrote the
// chunks' partials itself (partials[chunk · cols + c], each chunk in the order above):
// each group's chunks in order, added into sums[g] (null: skipped).
void launch_finish_grouped_column_sums(const double* partials, std::int64_t cols, const std::int64_t* group_chunks,
                                       float* const* sums, int groups, Stream stream);
// The same over a bf16 m (its values widened exactly, in the same order): the input
// biases' gradients of a bf16 backward, from the bf16 ∂L/∂z its products read.
void launch_add_grouped_column_sums_bf16(const void* m, std::int64_t cols, const std::int64_t* chunk_rows,
                                         std::int64_t chunks, const std::int64_t* group_chunks, float* const* sums,
                                         int groups, double* partials, Stream stream);
// partials[b] (device, float64) for b < sum_squares_blocks(n): each block's Σ x².
int sum_squares_blocks(std::int64_t n);
void launch_sum_squares(const float* x, std::int64_t n, double* partials, Stream stream);

}  // namespace moe::kernels::cuda
