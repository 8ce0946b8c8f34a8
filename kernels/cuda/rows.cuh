// Row movement: the gather into expert order and the weighted combine (and its
// backward). Element functions shared with the CPU driver of the host tests; one
// block per row on the GPU, threads over the row's elements.
#pragma once

#include <cstdint>

#include "kernels/cuda/stream.cuh"
#include "kernels/host_device.hpp"

namespace moe::kernels::cuda {

// The rules the kernels apply to whole rows (four elements at a time where they can,
// kernels/cuda/vector_access.cuh): grouped row i copies source row rows[i], and -1
// marks a padding row, which is zeros; a combine entry's weight is weights[a], or 1
// without weights. gather_element and combine_element state one element with them.
MOE_HD inline bool is_padding_row(const std::int32_t* rows, std::int64_t i) { return rows[i] < 0; }
MOE_HD inline float entry_weight(const float* weights, std::int32_t a) { return weights ? weights[a] : 1.0f; }

// dst[i, h] = src[rows[i], h], or 0 for a padding row (rows[i] = -1)
MOE_HD inline float gather_element(const float* src, const std::int32_t* rows, std::int64_t width, std::int64_t i,
                                   std::int64_t h) {
  return is_padding_row(rows, i) ? 0.0f : src[static_cast<std::int64_t>(rows[i]) * width + h];
}

// dst[r, h] = Σ_{a in row r} weights[a] · src[sources[a], h] (weights null means 1),
// summed in entry order.
MOE_HD inline float combine_element(const float* src, std::int64_t width, const std::int32_t* offsets,
                                    const std::int32_t* sources, const float* weights, std::int64_t r,
                                    std::int64_t h) {
  float sum = 0.0f;
  for (std::int32_t a = offsets[r]; a < offsets[r + 1]; ++a)
    sum += entry_weight(weights, a) * src[static_cast<std::int64_t>(sources[a]) * width + h];
  return sum;
}

// The combine's backward at one element of an entry of weight w: from ∂L/∂dst d and the
// source's value x, ∂L/∂src = w · d into d_src, and the term d · x (in float64) of the
// entry's weight gradient Σ_h ∂L/∂dst · src.
MOE_HD inline double combine_backward_term(float d, float x, float w, float& d_src) {
  d_src = w * d;
  return double(d) * double(x);
}

// The same for entry a of row r at element h, in the arrays: d_src[sources[a], h] and
// the term of d_weights[a] = Σ_h d_dst[r, h] · src[sources[a], h] that h contributes.
MOE_HD inline double combine_backward_element(const float* d_dst, const float* src, std::int64_t width,
                                              const std::int32_t* sources, const float* weights, std::int64_t r,
                                              std::int32_t a, std::int64_t h, float* d_src) {
  const std::int64_t s = static_cast<std::int64_t>(sources[a]) * width + h;
  return combine_backward_term(d_dst[r * width + h], src[s], entry_weight(weights, a), d_src[s]);
}

// dst[positions[i]] = values[i]
MOE_HD inline void scatter_element(const float* values, const std::int32_t* positions, std::int64_t i, float* dst) {
  dst[positions[i]] = values[i];
}

void launch_gather_rows(const float* src, const std::int32_t* rows, std::int64_t n, std::int64_t width, float* dst,
                        Stream stream);
// The same gather into float rows (dst, may be null) and bf16 rows (dst_bf16, may be
// null; each value rounded to nearest even, as launch_to_bf16), one read of the source.
void launch_gather_rows_bf16(const float* src, const std::int32_t* rows, std::int64_t n, std::int64_t width,
                             float* dst, void* dst_bf16, Stream stream);
void launch_combine_rows(const float* src, std::int64_t width, std::int64_t n_out, const std::int32_t* offsets,
                         const std::int32_t* sources, const float* weights, float* dst, Stream stream);
void launch_combine_backward(const float* d_dst, const float* src, std::int64_t width, std::int64_t n_out,
                             const std::int32_t* offsets, const std::int32_t* sources, const float* weights,
                             float* d_src, float* d_weights, Stream stream);

void launch_scatter(const float* values, const std::int32_t* positions, std::int64_t n, float* dst, Stream stream);

}  // namespace moe::kernels::cuda
