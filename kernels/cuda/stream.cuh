// The CUDA stream type without the CUDA headers, so that the per-op headers (and the
// host tests of their element functions) compile anywhere.
#pragma once

struct CUstream_st;
namespace moe::kernels::cuda {
using Stream = CUstream_st*;

// Threads per block for the element-wise and per-row kernels.
constexpr int kBlock = 256;
}  // namespace moe::kernels::cuda
