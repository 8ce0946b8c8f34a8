// Column sums (aux loss, bias gradients) and the sum of squares (gradient norms): one
// thread per column summing rows in order, and per-block partials summed in order on
// the host, so results do not depend on the launch shape.
#pragma once

#include <cstdint>

#include "kernels/cuda/stream.cuh"
#include "kernels/host_device.hpp"

namespace moe::kernels::cuda {

MOE_HD inline double column_sum(const float* m, std::int64_t rows, std::int64_t cols, std::int64_t c) {
  double sum = 0.0;
  for (std::int64_t r = 0; r < rows; ++r) sum += m[r * cols + c];
  return sum;
}

// sums[c] (device, float64) = column sums; or, for add_column_sums, float sums[c] += it.
void launch_column_sums(const float* m, std::int64_t rows, std::int64_t cols, double* sums, Stream stream);
void launch_add_column_sums(const float* m, std::int64_t rows, std::int64_t cols, float* sums, Stream stream);
// partials[b] (device, float64) for b < sum_squares_blocks(n): each block's Σ x².
int sum_squares_blocks(std::int64_t n);
void launch_sum_squares(const float* x, std::int64_t n, double* partials, Stream stream);

}  // namespace moe::kernels::cuda
