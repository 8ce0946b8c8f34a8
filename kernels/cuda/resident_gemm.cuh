// Grouped bf16 products whose groups only the device knows: C[r, :] = A[r, :] · B_g for
// the rows r of group g, [offsets[g], offsets[g+1]) with the offsets in device memory,
// as the single-rank plan writes them where the routing lives. cuBLAS takes every
// group's row count on the host (cublasGemmEx per group, and cublasGemmGroupedBatchedEx
// too), so the layer's other products wait for the routing; these do not, which is
// what a dropless forward without a wait, and its CUDA graph, need (MoELayer::
// forward_async; docs/design.md §4b).
//
// One kernel, tensor cores through WMMA (16 × 16 × 16 bf16, float32 accumulation): a
// block computes a 64 × 64 tile of one group's C, its A and B tiles staged in shared
// memory by cp.async, two stages deep. The grid is fixed by what the host knows before
// the routing: groups × ⌈max_group_rows / 64⌉ row tiles (a dropless single-rank plan
// gives an expert at most one row per token) × ⌈n / 64⌉ column tiles; a tile past its
// group's rows returns at once. At a decoding step's few tokens that is a few blocks per
// chosen expert, and only the chosen experts' weights are read, where capacity-padded
// experts (static shapes) run and read every expert.
//
// Written for small token counts, not to replace cuBLAS: the layer's other forwards
// keep their per-expert cuBLAS products. Not yet run on a GPU (2026-11-27).
#pragma once

#include <cstdint>

#include "kernels/cuda/stream.cuh"
#include "kernels/host_device.hpp"

namespace moe::kernels::cuda {

constexpr int kResidentTileRows = 64;

// The grid's row tiles: every group gets ⌈max_group_rows / 64⌉, so tile x is group
// x / that, rows [offsets[g] + 64·(x mod that), …) within the group's.
MOE_HD inline std::int64_t resident_row_tiles_per_group(std::int64_t max_group_rows) {
  return (max_group_rows + kResidentTileRows - 1) / kResidentTileRows;
}

// Whether resident_grouped_gemm takes products of these widths: every row of A, B and C
// a whole number of 16-byte pieces (8 bf16), which the staged copies move.
MOE_HD inline bool resident_gemm_fits(std::int64_t n, std::int64_t k) { return n > 0 && k > 0 && n % 8 == 0 && k % 8 == 0; }

// C (bf16 [rows, n]) = A (bf16 [rows, k]) · B_g (bf16 [k, n], row-major) for the rows of
// each group g < groups, offsets (int64 [groups + 1], device) from 0 to rows; b holds
// the groups' B pointers on the device. max_group_rows bounds every group's rows (a
// group with more would leave rows unwritten: the caller's bound must hold). n and k as
// resident_gemm_fits says. Rows past offsets[groups] are not written.
void launch_resident_grouped_gemm(const void* a, const void* const* b, void* c, const std::int64_t* offsets,
                                  int groups, std::int64_t max_group_rows, int n, int k, Stream stream);

}  // namespace moe::kernels::cuda
