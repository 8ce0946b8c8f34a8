// The CUDA stream type without the CUDA headers, so that the per-op headers (and the
// host tests of their element functions) compile anywhere.
#pragma once

struct CUstream_st;
namespace moe::kernels::cuda {
using Stream = CUstream_st*;

// Threads per block for the element-wise and per-row kernels.
constexpr int kBlock = 256;

// Rows a block takes together in the row kernels that move rows whole (the gather and
// the experts' epilogues). At a block per row each block did little more than wait:
// for its row's index or group (a chain of dependent loads), then for its one load a
// thread (ncu, fine forward on an H200, 2026-11-27: the hidden epilogue moved about
// 1.3 TB/s of the 4.8). A tile has every row's loads in flight together.
constexpr int kRowTile = 4;
}  // namespace moe::kernels::cuda
