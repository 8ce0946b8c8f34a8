// MOE_CHECK traits for the CUDA runtime and cuBLAS.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "check.hpp"
#include "kernels/cuda/stream.cuh"

namespace moe::kernels::cuda {

struct Cuda {
  static constexpr const char* library = "CUDA";
  static bool ok(cudaError_t e) { return e == cudaSuccess; }
  static std::string name(cudaError_t e) { return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")"; }
};

struct Cublas {
  static constexpr const char* library = "cuBLAS";
  static bool ok(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS; }
  static std::string name(cublasStatus_t s) { return cublasGetStatusName(s); }
};

// After a kernel launch: a bad configuration shows up here, not at the next call.
#define MOE_CHECK_LAUNCH() MOE_CHECK(::moe::kernels::cuda::Cuda, cudaGetLastError())

inline unsigned blocks_for(long long n, int threads) {
  const long long b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535LL * 32 ? 65535LL * 32 : b));
}

// A block per row for the row kernels (gather, combine, the experts' epilogues), at most
// 2^20 blocks: past that the kernels' loops step by the grid.
inline unsigned row_blocks(long long rows) {
  return static_cast<unsigned>(rows < 1 ? 1 : (rows > (1LL << 20) ? (1LL << 20) : rows));
}

// A block per tile of kRowTile rows (stream.cuh), the same way.
inline unsigned tile_blocks(long long rows) { return row_blocks((rows + kRowTile - 1) / kRowTile); }

}  // namespace moe::kernels::cuda
