// Split-K for the thin float32 products of Ops::gemm (docs/design.md §4b): a router's
// logits [T, E] over K = H, its weights' gradient [H, E] over K = T, the shared
// expert's gate [T, 1]. Their outputs are a few cuBLAS tiles, so most of the GPU sat
// idle while each tile walked all of K: ncu, fine forward on an H200 (check 3), the
// logits [8 192, 64] over K = 2 048 took 70 µs in 64 tiles of 128 × 64 on 132 SMs, at
// about 30 TFLOP/s (at ncu's base clocks). Split, S products each over K / S (one
// strided-batched cuBLAS launch) write partial sums, and one pass adds them in slice
// order: deterministic, the same bits run after run. Header without CUDA, so the CPU tests drive the same rules.
#pragma once

#include <cstdint>

#include "kernels/host_device.hpp"

namespace moe::kernels::cuda {

inline constexpr int kSplitKMaxSlices = 16;
// The least depth a slice walks: below it the launch and the partials' pass cost more
// than the idle SMs.
inline constexpr std::int64_t kSplitKMinDepth = 512;

// How many slices of K a row-major [m, n] = [m, k] · [k, n] product takes on a GPU of
// `sms` multiprocessors: 1 (no split) when its 128 × 64 tiles already fill them; else
// the least power of two that fills them, at most kSplitKMaxSlices, halved until K
// divides into slices of at least kSplitKMinDepth and a multiple of 4 (each slice's
// start then 16-byte aligned, as the whole matrix is).
inline int split_k_slices(std::int64_t m, std::int64_t n, std::int64_t k, int sms) {
  const std::int64_t tiles = ((m + 127) / 128) * ((n + 63) / 64);
  if (sms <= 0 || tiles <= 0 || tiles >= sms) return 1;
  int slices = 1;
  while (slices < kSplitKMaxSlices && tiles * slices < sms) slices *= 2;
  while (slices > 1 && (k % slices != 0 || (k / slices) % 4 != 0 || k / slices < kSplitKMinDepth)) slices /= 2;
  return slices;
}

// Floats enough for the partial products of any split product on `sms`
// multiprocessors: a split takes fewer than twice the tiles that fill the GPU (tiles ·
// slices < 2 · sms, as half the slices would not fill it), and m · n is at most 128 ·
// 64 elements a tile. The scratch is sized to this once, at the first split, so that
// no later product (a call with other token counts) moves it: a captured CUDA graph
// reads it (8.6 MB at 132 multiprocessors).
inline std::int64_t split_k_partials_bound(int sms) { return std::int64_t{2} * 128 * 64 * sms; }

// Where slice s of K starts in A and in B, in elements from the start of each, for
// row-major operands as gemm() takes them: A [m, k] (lda), or stored [k, m] when
// trans_a; B [k, n] (ldb), or stored [n, k] when trans_b. Slice s covers columns
// [s·depth, (s+1)·depth) of op(A) and the same rows of op(B).
struct SliceStrides {
  std::int64_t a, b;
};
MOE_HD inline SliceStrides split_k_strides(bool trans_a, bool trans_b, std::int64_t depth, std::int64_t lda,
                                           std::int64_t ldb) {
  return {trans_a ? depth * lda : depth, trans_b ? depth : depth * ldb};
}

// Element (i, j) of the product from its slices' partial products (partials: [slices,
// m, n], each row-major): beta · C[i, j] (C not read when beta = 0, as in cuBLAS) plus
// the partials in slice order.
MOE_HD inline float split_k_element(const float* partials, int slices, std::int64_t m, std::int64_t n,
                                    std::int64_t i, std::int64_t j, float beta, const float* c, std::int64_t ldc) {
  float sum = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
  for (int s = 0; s < slices; ++s) sum += partials[(s * m + i) * n + j];
  return sum;
}

}  // namespace moe::kernels::cuda
