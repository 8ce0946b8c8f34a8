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
// memory by cp.async, kStages deep. The grid is fixed by what the host knows before
// the routing, the rows in all: ⌈rows / 64⌉ + min(groups, rows) row tiles (each group's
// last tile may be partial) × ⌈n / 64⌉ column tiles. Where each group's tiles begin is
// a prefix over the groups, made on the device first (launch_resident_tile_starts: one
// thread, E steps); a block finds its group by a binary search in it, and a tile past
// the last returns at once. At a decoding step's few tokens that is a few blocks per
// chosen expert, and only the chosen experts' weights are read, where capacity-padded
// experts (static shapes) run and read every expert.
//
// Where the tiles are too few to fill the GPU (a decoding step's rows), K is split into
// slices, a slice per grid layer: each block walks its slice of K and writes float32
// partial sums, and one pass adds the slices in order and rounds to bf16 once
// (resident_k_slices says how many; deterministic, like split_k.cuh's).
//
// Written for small token counts, not to replace cuBLAS: the layer's other forwards
// keep their per-expert cuBLAS products. On an H200 (2026-11-27) its tests passed, but
// with two stages and no split it was slower than the forward's cuBLAS products at every
// size timed, decoding steps included (docs/design.md, "A forward with no wait"): at
// mid, 8 tokens, the second product's 112 busy blocks each walked K = 4 096 in 128
// dependent steps. Four stages and the split came after: on the next check (2026-11-28)
// the async forward was level with `forward` at mid, 8 tokens, and still twice its time
// at DeepSeek-like, 64 tokens. That check also found the stages overlapping in shared
// memory, hence stage_a and stage_b below, which the host tests stage through.
#pragma once

#include <cstdint>

#include "kernels/cuda/stream.cuh"
#include "kernels/host_device.hpp"

namespace moe::kernels::cuda {

constexpr int kResidentTileRows = 64;

// The grid's row tiles for `rows` rows in `groups` groups: at least Σ_g ⌈rows_g / 64⌉,
// which is at most ⌊rows / 64⌋ plus one partial tile per non-empty group.
MOE_HD inline std::int64_t resident_row_tile_bound(std::int64_t rows, std::int64_t groups) {
  return (rows + kResidentTileRows - 1) / kResidentTileRows + (groups < rows ? groups : rows);
}

// Where each group's row tiles begin: starts[g] = Σ_{g' < g} ⌈rows_g' / 64⌉ for g ≤
// groups (starts[groups]: the tiles in all), from the groups' row offsets.
MOE_HD inline void resident_tile_starts(const std::int64_t* offsets, std::int64_t groups, std::int64_t* starts) {
  starts[0] = 0;
  for (std::int64_t g = 0; g < groups; ++g)
    starts[g + 1] = starts[g] + (offsets[g + 1] - offsets[g] + kResidentTileRows - 1) / kResidentTileRows;
}

// The kernel's geometry and its index arithmetic, apart so that the host tests drive
// it the way the kernel does (tests/unit/test_cuda_shared_logic.cpp: every block's
// staging, fragments and stores emulated, against float64).
namespace resident {

constexpr int kTileM = kResidentTileRows, kTileN = 64, kTileK = 32;
constexpr int kStages = 4;  // cp.async stages: three loads in flight ahead of the tensor cores
constexpr int kThreads = 128;  // four warps, each a 32 × 32 quarter of the tile
constexpr int kFrag = 16;      // WMMA's bf16 shape: 16 × 16 × 16
// Shared-memory rows padded by 16 bytes (8 bf16, 4 floats), so that the warps' fragment
// loads do not all fall on the same banks; WMMA wants a multiple of 8 (bf16) or 4
// (float) elements, and fragment pointers 32-byte aligned, which these keep.
constexpr int kLdA = kTileK + 8, kLdB = kTileN + 8, kLdC = kTileN + 4;
constexpr int kStageA = kTileM * kLdA, kStageB = kTileK * kLdB;  // bf16 elements a stage
// The stages in the block's shared memory, in bf16 elements from its start: every
// stage's A tile, then every stage's B tile. Stage s's A tile begins at stage_a(s), its
// B tile at stage_b(s); the host tests stage through these, in the kernel's order, into
// one buffer of kStagedElements, so that overlapping stages fail them as on the GPU.
constexpr int kStagedElements = kStages * (kStageA + kStageB);
MOE_HD inline int stage_a(int s) { return s * kStageA; }
MOE_HD inline int stage_b(int s) { return kStages * kStageA + s * kStageB; }

// The rows of C row tile x covers: its group's (the last g with starts[g] ≤ x, found by
// binary search, so empty groups are passed over), from `first`, `rows` of them (0:
// x is past the last tile).
struct RowTile {
  std::int64_t group, first;
  int rows;
};
MOE_HD inline RowTile row_tile(const std::int64_t* offsets, const std::int64_t* starts, std::int64_t groups,
                               std::int64_t x) {
  if (x >= starts[groups]) return {0, 0, 0};
  std::int64_t lo = 0, hi = groups - 1;
  while (lo < hi) {
    const std::int64_t mid = (lo + hi + 1) / 2;
    if (starts[mid] <= x) lo = mid;
    else hi = mid - 1;
  }
  const std::int64_t first = offsets[lo] + (x - starts[lo]) * kTileM, rows = offsets[lo + 1] - first;
  return {lo, first, rows < kTileM ? static_cast<int>(rows) : kTileM};
}

// A 16-byte piece (8 bf16) of a tile `width` elements wide: piece p is at row p / (width
// / 8), column 8 · (p mod (width / 8)). A stage's A tile has kTileM × kTileK / 8 pieces,
// its B tile kTileK × kTileN / 8; the output kTileM × kTileN / 8.
struct Piece {
  int row, col;
};
MOE_HD inline Piece piece_of(int p, int width) { return {p / (width / 8), p % (width / 8) * 8}; }

// Where a stage's piece comes from (-1: nothing there, the piece is zeros): A's piece
// of the tile's rows [first, first + rows) at columns k0 + col, of A [*, k]; B's piece
// at rows k0 + row, columns n0 + col, of B [k, n]. k and n are multiples of 8, so a
// piece is wholly inside or wholly outside.
MOE_HD inline std::int64_t a_source(Piece q, std::int64_t first, int rows, int k0, int k) {
  return q.row < rows && k0 + q.col < k ? (first + q.row) * k + k0 + q.col : -1;
}
MOE_HD inline std::int64_t b_source(Piece q, int k0, int n0, int k, int n) {
  return k0 + q.row < k && n0 + q.col < n ? static_cast<std::int64_t>(k0 + q.row) * n + n0 + q.col : -1;
}
// Where an output piece goes in C [*, n] (-1: past the tile's rows or n).
MOE_HD inline std::int64_t c_target(Piece q, std::int64_t first, int rows, int n0, int n) {
  return q.row < rows && n0 + q.col < n ? (first + q.row) * n + n0 + q.col : -1;
}

// Warp w's quarter of the tile begins at row warp_row(w), column warp_col(w); its
// fragments (i, j) at 16·i and 16·j from there. Fragment offsets in a stage: A's (row
// warp_row + 16 i, column kk), B's (row kk, column warp_col + 16 j); the output's
// (warp_row + 16 i, warp_col + 16 j).
MOE_HD inline int warp_row(int warp) { return warp / 2 * 32; }
MOE_HD inline int warp_col(int warp) { return warp % 2 * 32; }
MOE_HD inline int a_fragment(int warp, int i, int kk) { return (warp_row(warp) + i * kFrag) * kLdA + kk; }
MOE_HD inline int b_fragment(int warp, int j, int kk) { return kk * kLdB + warp_col(warp) + j * kFrag; }
MOE_HD inline int c_fragment(int warp, int i, int j) {
  return (warp_row(warp) + i * kFrag) * kLdC + warp_col(warp) + j * kFrag;
}

// The k tiles (of kTileK) slice `slice` of `slices` walks: [begin, end), the tiles
// shared out evenly in order; a slice past the last tile is empty (its block writes
// zeros, which the sum of the slices needs).
struct KTiles {
  int begin, end;
};
MOE_HD inline KTiles k_tiles_of_slice(int k, int slices, int slice) {
  const int tiles = (k + kTileK - 1) / kTileK, per = (tiles + slices - 1) / slices;
  const int begin = slice * per < tiles ? slice * per : tiles;
  return {begin, begin + per < tiles ? begin + per : tiles};
}

}  // namespace resident

// The least k tiles a slice walks: below that the partial sums' pass costs more than
// the idle multiprocessors.
constexpr int kResidentMinKTilesPerSlice = 4;
constexpr int kResidentMaxSlices = 16;

// How many slices of K a resident product of `rows` rows (in all its groups) takes,
// C [rows, n] over K = k, on `sms` multiprocessors: 1 where the fewest tiles the rows
// can make (⌈rows / 64⌉ row tiles, all in one group, × ⌈n / 64⌉) already fill them;
// else doubled while they do not, at most kResidentMaxSlices, each slice at least
// kResidentMinKTilesPerSlice tiles of K. The float32 partials (slices · rows · n) then
// stay under `partial_bound` floats: tiles · slices < 2 · sms, 64 · 64 elements a tile
// (and halved if ever they would not).
MOE_HD inline int resident_k_slices(std::int64_t rows, int n, int k, int sms, std::int64_t partial_bound) {
  const std::int64_t row_tiles = (rows + kResidentTileRows - 1) / kResidentTileRows;
  const std::int64_t tiles = row_tiles * ((n + resident::kTileN - 1) / resident::kTileN);
  const int k_tiles = (k + resident::kTileK - 1) / resident::kTileK;
  int slices = 1;
  while (slices < kResidentMaxSlices && tiles * slices < sms && k_tiles / (2 * slices) >= kResidentMinKTilesPerSlice)
    slices *= 2;
  while (slices > 1 && slices * rows * n > partial_bound) slices /= 2;
  return slices;
}

// Whether launch_resident_grouped_gemm takes products of these widths: every row of A, B and C
// a whole number of 16-byte pieces (8 bf16), which the staged copies move.
MOE_HD inline bool resident_gemm_fits(std::int64_t n, std::int64_t k) {
  return n > 0 && k > 0 && n % 8 == 0 && k % 8 == 0;
}

// starts (device, int64 [groups + 1]) = resident_tile_starts of the offsets (device,
// int64 [groups + 1]), on the stream, for the products that follow on these offsets.
void launch_resident_tile_starts(const std::int64_t* offsets, int groups, std::int64_t* starts, Stream stream);

// C (bf16 [rows, n]) = A (bf16 [rows, k]) · B_g (bf16 [k, n], row-major) for the rows of
// each group g < groups, offsets (int64 [groups + 1], device) from 0 to rows, starts
// as launch_resident_tile_starts made them from those offsets; b holds the groups' B
// pointers on the device. n and k as resident_gemm_fits says. With slices > 1 (as
// resident_k_slices says), `partials` holds slices · rows · n floats of scratch.
void launch_resident_grouped_gemm(const void* a, const void* const* b, void* c, const std::int64_t* offsets,
                                  const std::int64_t* starts, int groups, std::int64_t rows, int n, int k, int slices,
                                  float* partials, Stream stream);

}  // namespace moe::kernels::cuda
