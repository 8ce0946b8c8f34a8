#include <cuda_bf16.h>
#include <mma.h>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/resident_gemm.cuh"
#include "kernels/cuda/vector_access.cuh"

namespace moe::kernels::cuda {
namespace {

namespace wmma = nvcuda::wmma;
using namespace resident;

constexpr int kStagedBytes = 2 * (kStageA + kStageB) * 2;
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
// Waits until at most one group of copies (the last committed) is still in flight.
__device__ inline void wait_all_but_last_copies() { asm volatile("cp.async.wait_group 1;\n" ::); }

__global__ void __launch_bounds__(kThreads)
    resident_grouped_gemm_kernel(const __nv_bfloat16* a, const __nv_bfloat16* const* b, __nv_bfloat16* c,
                                 const std::int64_t* offsets, const std::int64_t* starts, int groups, int n,
                                 int k) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // bf16 tensor cores need sm_80; the library is built for 80 and 90
#else
  const RowTile tile = row_tile(offsets, starts, groups, blockIdx.x);
  if (tile.rows == 0) return;  // past the last tile: the grid is sized before the routing
  const int n0 = static_cast<int>(blockIdx.y) * kTileN;
  const __nv_bfloat16* bg = b[tile.group];

  __shared__ __align__(128) unsigned char shared[kSharedBytes];
  auto* staged_a = reinterpret_cast<__nv_bfloat16*>(shared);
  auto* staged_b = staged_a + 2 * kStageA;

  // A stage: the tile's 64 rows × 32 columns of A (rows past the group's are zeros) and
  // 32 rows × 64 columns of B (past k or n: zeros), in 16-byte pieces, two a thread each.
  auto stage = [&](int k0, int s) {
    for (int p = static_cast<int>(threadIdx.x); p < kTileM * kTileK / 8; p += kThreads) {
      const Piece q = piece_of(p, kTileK);
      const std::int64_t from = a_source(q, tile.first, tile.rows, k0, k);
      copy16_async(staged_a + s * kStageA + q.row * kLdA + q.col, a + (from < 0 ? 0 : from), from >= 0);
    }
    for (int p = static_cast<int>(threadIdx.x); p < kTileK * kTileN / 8; p += kThreads) {
      const Piece q = piece_of(p, kTileN);
      const std::int64_t from = b_source(q, k0, n0, k, n);
      copy16_async(staged_b + s * kStageB + q.row * kLdB + q.col, bg + (from < 0 ? 0 : from), from >= 0);
    }
  };

  const int warp = static_cast<int>(threadIdx.x) / 32;
  wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, float> acc[2][2];
  for (auto& row : acc)
    for (auto& f : row) wmma::fill_fragment(f, 0.0f);

  // Two stages: while the tensor cores work on stage t, the copies fill stage t + 1.
  const int k_tiles = (k + kTileK - 1) / kTileK;
  stage(0, 0);
  commit_copies();
  for (int t = 0; t < k_tiles; ++t) {
    if (t + 1 < k_tiles) stage((t + 1) * kTileK, (t + 1) % 2);
    commit_copies();  // possibly empty, so that the wait below always leaves one group
    wait_all_but_last_copies();
    __syncthreads();  // every thread's copies of stage t have landed
    const __nv_bfloat16* sa = staged_a + (t % 2) * kStageA;
    const __nv_bfloat16* sb = staged_b + (t % 2) * kStageB;
    for (int kk = 0; kk < kTileK; kk += kFrag) {
      wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, __nv_bfloat16, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, __nv_bfloat16, wmma::row_major> fb[2];
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], sa + a_fragment(warp, i, kk), kLdA);
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], sb + b_fragment(warp, j, kk), kLdB);
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();  // before the next iteration's copies overwrite this stage
  }

  // The float32 tile through shared memory (the stages are done with), then rounded to
  // bf16 once and written 8 columns a piece, the group's rows only.
  auto* out = reinterpret_cast<float*>(shared);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(out + c_fragment(warp, i, j), acc[i][j], kLdC, wmma::mem_row_major);
  __syncthreads();
  for (int p = static_cast<int>(threadIdx.x); p < kTileM * kTileN / 8; p += kThreads) {
    const Piece q = piece_of(p, kTileN);
    const std::int64_t to = c_target(q, tile.first, tile.rows, n0, n);
    if (to < 0) continue;
    float v[8];
    for (int e = 0; e < 8; ++e) v[e] = out[q.row * kLdC + q.col + e];
    store<8>(c + to, v);
  }
#endif
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
                                  const std::int64_t* starts, int groups, std::int64_t rows, int n, int k,
                                  Stream stream) {
  if (groups <= 0 || rows <= 0 || n <= 0) return;
  MOE_CHECK_ARG(resident_gemm_fits(n, k), "launch_resident_grouped_gemm", "n = ", n, ", k = ", k,
                "; expected positive multiples of 8");
  const std::int64_t row_tiles = resident_row_tile_bound(rows, groups);
  MOE_CHECK_ARG(row_tiles <= 0x7fffffffLL, "launch_resident_grouped_gemm", rows, " rows in ", groups,
                " groups; expected fewer than 2^31 row tiles of ", kResidentTileRows);
  const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>((n + kTileN - 1) / kTileN));
  resident_grouped_gemm_kernel<<<grid, kThreads, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(a), reinterpret_cast<const __nv_bfloat16* const*>(b),
      static_cast<__nv_bfloat16*>(c), offsets, starts, groups, n, k);
  MOE_CHECK_LAUNCH();
}

}  // namespace moe::kernels::cuda
