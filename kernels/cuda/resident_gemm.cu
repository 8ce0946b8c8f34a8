#include <cuda_bf16.h>
#include <mma.h>

#include <algorithm>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/resident_gemm.cuh"
#include "kernels/cuda/vector_access.cuh"

namespace moe::kernels::cuda {
namespace {

namespace wmma = nvcuda::wmma;
using namespace resident;

// Four stages take 38 912 bytes of shared memory. The kernel's 127 registers a thread
// (ptxas, sm_90) already hold a multiprocessor to 4 blocks of 128 threads, and 4 × 38 912
// bytes fit beside them, so the stages cost no occupancy (two took 19 456).
constexpr int kStagedBytes = kStagedElements * 2;
constexpr int kOutBytes = kTileM * kLdC * 4;
constexpr int kSharedBytes = kStagedBytes > kOutBytes ? kStagedBytes : kOutBytes;
static_assert(kSharedBytes <= 48 * 1024, "static shared memory");

// 16 bytes from global to shared memory without passing through registers; with
// valid false it writes 16 zero bytes and reads nothing (src-size 0).
__device__ inline void copy16_async(void* shared, const void* global, bool valid) {
  const auto to = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(to), "l"(global), "r"(valid ? 16 : 0));
}
__device__ inline void commit_copies() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most `Pending` groups of copies (the last committed) are still in flight.
template <int Pending>
__device__ inline void wait_copies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending));
}

// Grid: x row tiles, y column tiles, z slices of K. One slice: C in bf16; several: the
// slice's float32 partial sums at partials + z · rows · n (rows · n: C's elements).
__global__ void __launch_bounds__(kThreads)
    resident_grouped_gemm_kernel(const __nv_bfloat16* a, const __nv_bfloat16* const* b, __nv_bfloat16* c,
                                 float* partials, std::int64_t elements, const std::int64_t* offsets,
                                 const std::int64_t* starts, int groups, int n, int k) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 tensor cores need sm_80; the library is built for 80 and 90
#else
  const RowTile tile = row_tile(offsets, starts, groups, blockIdx.x);
  if (tile.rows == 0) return;  // past the last tile: the grid is sized before the routing
  const int n0 = static_cast<int>(blockIdx.y) * kTileN;
  const __nv_bfloat16* bg = b[tile.group];

  __shared__ __align__(128) unsigned char shared[kSharedBytes];
  auto* staged = reinterpret_cast<__nv_bfloat16*>(shared);

  // A stage: the tile's 64 rows × 32 columns of A (rows past the group's are zeros) and
  // 32 rows × 64 columns of B (past k or n: zeros), in 16-byte pieces, two a thread each.
  auto stage = [&](int k0, int s) {
    for (int p = static_cast<int>(threadIdx.x); p < kTileM * kTileK / 8; p += kThreads) {
      const Piece q = piece_of(p, kTileK);
      const std::int64_t from = a_source(q, tile.first, tile.rows, k0, k);
      copy16_async(staged + stage_a(s) + q.row * kLdA + q.col, a + (from < 0 ? 0 : from), from >= 0);
    }
    for (int p = static_cast<int>(threadIdx.x); p < kTileK * kTileN / 8; p += kThreads) {
      const Piece q = piece_of(p, kTileN);
      const std::int64_t from = b_source(q, k0, n0, k, n);
      copy16_async(staged + stage_b(s) + q.row * kLdB + q.col, bg + (from < 0 ? 0 : from), from >= 0);
    }
  };

  const int warp = static_cast<int>(threadIdx.x) / 32;
  wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, float> acc[2][2];
  for (auto& row : acc)
    for (auto& f : row) wmma::fill_fragment(f, 0.0f);

  // kStages stages: while the tensor cores work on step i, the copies of the next
  // kStages - 1 are in flight. Each step commits one group of copies (possibly empty),
  // so that before step i, i + kStages - 1 groups are committed and waiting until at
  // most kStages - 2 are pending means step i's have landed.
  const KTiles slice = k_tiles_of_slice(k, static_cast<int>(gridDim.z), static_cast<int>(blockIdx.z));
  const int steps = slice.end - slice.begin;
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < steps) stage((slice.begin + s) * kTileK, s);
    commit_copies();
  }
  for (int i = 0; i < steps; ++i) {
    wait_copies<kStages - 2>();
    // Every thread's copies of step i have landed, and every warp is done with step
    // i - 1, whose stage the copies issued next overwrite.
    __syncthreads();
    if (i + kStages - 1 < steps) stage((slice.begin + i + kStages - 1) * kTileK, (i + kStages - 1) % kStages);
    commit_copies();
    const __nv_bfloat16* sa = staged + stage_a(i % kStages);
    const __nv_bfloat16* sb = staged + stage_b(i % kStages);
    for (int kk = 0; kk < kTileK; kk += kFrag) {
      wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, __nv_bfloat16, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, __nv_bfloat16, wmma::row_major> fb[2];
      for (int i2 = 0; i2 < 2; ++i2) wmma::load_matrix_sync(fa[i2], sa + a_fragment(warp, i2, kk), kLdA);
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], sb + b_fragment(warp, j, kk), kLdB);
      for (int i2 = 0; i2 < 2; ++i2)
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i2][j], fa[i2], fb[j], acc[i2][j]);
    }
  }
  wait_copies<0>();  // only empty groups are left, but the output reuses the stages' memory
  __syncthreads();   // every warp is done with the last stage

  // The float32 tile through shared memory, then written 8 columns a piece, the group's
  // rows only: rounded to bf16 once, or as this slice's float32 partial sums.
  auto* out = reinterpret_cast<float*>(shared);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(out + c_fragment(warp, i, j), acc[i][j], kLdC, wmma::mem_row_major);
  __syncthreads();
  float* partial = gridDim.z > 1 ? partials + blockIdx.z * elements : nullptr;
  for (int p = static_cast<int>(threadIdx.x); p < kTileM * kTileN / 8; p += kThreads) {
    const Piece q = piece_of(p, kTileN);
    const std::int64_t to = c_target(q, tile.first, tile.rows, n0, n);
    if (to < 0) continue;
    float v[8];
    for (int e = 0; e < 8; ++e) v[e] = out[q.row * kLdC + q.col + e];
    if (partial) {
      store<8>(partial + to, v);
    } else {
      store<8>(c + to, v);
    }
  }
#endif
}

// C = the slices' partial sums added in slice order, rounded to bf16 once; 8 elements a
// thread (C's elements are rows · n, n a multiple of 8).
__global__ void resident_sum_slices_kernel(const float* partials, int slices, std::int64_t elements,
                                           __nv_bfloat16* c) {
  const std::int64_t pieces = elements / 8;
  for (std::int64_t p = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; p < pieces;
       p += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    float sum[8], part[8];
    load<8>(partials + 8 * p, sum);
    for (int s = 1; s < slices; ++s) {
      load<8>(partials + s * elements + 8 * p, part);
      for (int e = 0; e < 8; ++e) sum[e] += part[e];
    }
    store<8>(c + 8 * p, sum);
  }
}

__global__ void resident_tile_starts_kernel(const std::int64_t* offsets, int groups, std::int64_t* starts) {
  resident_tile_starts(offsets, groups, starts);
}

}  // namespace

void launch_resident_tile_starts(const std::int64_t* offsets, int groups, std::int64_t* starts, Stream stream) {
  resident_tile_starts_kernel<<<1, 1, 0, stream>>>(offsets, groups, starts);
  MOE_CHECK_LAUNCH();
}

void launch_resident_grouped_gemm(const void* a, const void* const* b, void* c, const std::int64_t* offsets,
                                  const std::int64_t* starts, int groups, std::int64_t rows, int n, int k, int slices,
                                  float* partials, Stream stream) {
  if (groups <= 0 || rows <= 0 || n <= 0) return;
  MOE_CHECK_ARG(resident_gemm_fits(n, k), "launch_resident_grouped_gemm", "n = ", n, ", k = ", k,
                "; expected positive multiples of 8");
  MOE_CHECK_ARG(slices >= 1 && slices <= kResidentMaxSlices && (slices == 1 || partials),
                "launch_resident_grouped_gemm", "slices = ", slices, (partials ? "" : " without partials"),
                "; expected 1 to ", kResidentMaxSlices, ", and scratch for the partial sums when more than 1");
  const std::int64_t row_tiles = resident_row_tile_bound(rows, groups);
  MOE_CHECK_ARG(row_tiles <= 0x7fffffffLL, "launch_resident_grouped_gemm", rows, " rows in ", groups,
                " groups; expected fewer than 2^31 row tiles of ", kResidentTileRows);
  const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>((n + kTileN - 1) / kTileN),
                  static_cast<unsigned>(slices));
  const std::int64_t elements = rows * n;
  resident_grouped_gemm_kernel<<<grid, kThreads, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(a), reinterpret_cast<const __nv_bfloat16* const*>(b),
      static_cast<__nv_bfloat16*>(c), partials, elements, offsets, starts, groups, n, k);
  MOE_CHECK_LAUNCH();
  if (slices == 1) return;
  constexpr int kSumThreads = 256;
  const std::int64_t blocks = std::min<std::int64_t>((elements / 8 + kSumThreads - 1) / kSumThreads, 4096);
  resident_sum_slices_kernel<<<static_cast<unsigned>(blocks), kSumThreads, 0, stream>>>(
      partials, slices, elements, static_cast<__nv_bfloat16*>(c));
  MOE_CHECK_LAUNCH();
}

}  // namespace moe::kernels::cuda
