// The normal stream of kernels/random_stream.hpp made on the GPU: a thread per pair.
#pragma once

#include <cstdint>

#include "kernels/cuda/stream.cuh"

namespace moe::kernels::cuda {

void launch_fill_normal(float* out, std::int64_t count, std::uint64_t start, Stream stream);

}  // namespace moe::kernels::cuda
