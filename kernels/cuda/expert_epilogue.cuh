// The element-wise work between and after the experts' two grouped bf16 GEMMs, and its
// backward, each one launch over every expert's rows (no per-expert launches): the
// first GEMM's bf16 result z plus the group's bias gives the hidden activation, act(z)
// (ffn) or act(z_gate) ⊙ z_up (glu), written in bf16 for the second GEMM (and kept for
// the backward, with z in bf16 too); the second GEMM's bf16 result plus its bias
// becomes the float32 expert output. Rows are grouped: rows [offsets[g], offsets[g+1])
// are expert g's (offsets relative to the first row, on the device, groups + 1 entries).
#pragma once

#include <cstdint>

#include "kernels/activation.hpp"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/stream.cuh"
#include "kernels/host_device.hpp"

namespace moe::kernels::cuda {

// One element of the hidden from the first GEMM's results with their biases added:
// gate = z[r, j] + b[j], and for glu up = z[r, F + j] + b[F + j]. The same as the CPU's
// activation (ffn) and glu_element (glu).
MOE_HD inline float expert_hidden_value(float gate, float up, bool gated, Act act) {
  return gated ? activate(act, gate) * up : activate(act, gate);
}

// Its backward for one hidden element, from ∂L/∂hidden dh and the element's
// pre-activations gate (and up, glu): ∂L/∂gate = dh · act'(gate) (ffn, as
// activation_backward), or glu_grad's pair (glu; d_up is left alone for ffn).
MOE_HD inline void expert_hidden_grad(float dh, float gate, float up, bool gated, Act act, float& d_gate,
                                      float& d_up) {
  if (gated)
    glu_grad(dh, gate, up, act, d_gate, d_up);
  else
    d_gate = dh * activate_grad(act, gate);
}

// The epilogue kernels take a tile of kRowTile consecutive rows a block (stream.cuh): a
// tile finds its first row's group once (group_of_row, a binary search) and steps to
// the next rows' groups, as rows are in group order; rows of one group share their
// bias, loaded once.
// The bias of each of the n ≤ kTileRows rows from `first` of grouped rows: as
// biases[group_of_row(offsets, groups, first + i)], with one search for the tile.
template <int kTileRows>
MOE_HD inline void tile_row_biases(const float* const* biases, const std::int64_t* offsets, int groups,
                                   std::int64_t first, int n, const float* (&bias)[kTileRows]) {
  int g = group_of_row(offsets, groups, first);
  for (int i = 0; i < kTileRows; ++i) {
    if (i >= n) {
      bias[i] = nullptr;
      continue;
    }
    while (g + 1 < groups && offsets[g + 1] <= first + i) ++g;  // the last group starting at or before the row
    bias[i] = biases[g];
  }
}

// z: bf16 [rows, G·F]; hidden_bf16 [rows, F] written; pre_bf16 [rows, G·F] (z plus the
// biases, for the backward) written when not null. by_element: a thread per 8 (or 4, 2,
// 1) elements over every row's, each finding its row's expert, instead of a block per
// tile of 4 rows (the same bits; MOE_HIDDEN_EPILOGUE_BY_ELEMENT, environment.cuh).
void launch_expert_hidden(const void* z, const float* const* biases, const std::int64_t* offsets, int groups,
                          std::int64_t rows, std::int64_t width, bool gated, Act act, void* pre_bf16,
                          void* hidden_bf16, Stream stream, bool by_element = false);
// The backward of launch_expert_hidden's activation: from d_hidden (float [rows, F])
// and pre_bf16 (bf16 [rows, G·F], as it wrote them), ∂L/∂z in bf16 into dz_bf16 [rows,
// G·F] (the backward products' operand, and the bias gradients' summand), each element
// as expert_hidden_grad.
void launch_expert_hidden_backward(const void* pre_bf16, const float* d_hidden, std::int64_t rows, std::int64_t width,
                                   bool gated, Act act, void* dz_bf16, Stream stream);
// launch_expert_hidden_backward and the input biases' gradient sums over the ∂L/∂z it
// writes, in one pass (MOE_BIAS_GRADIENT_SUMS_IN_EPILOGUE=1, a trial): the sums of
// launch_add_grouped_column_sums_bf16 over dz_bf16, bit for bit (the same rounded
// values, added in the same order), without reading ∂L/∂z again. The chunk table is
// column_sums' (reductions.cuh: chunk_rows, chunks, group_chunks, sums, groups,
// partials), its rows counted from the first of pre_bf16, and its chunks must cover
// every row: each group has a bias.
void launch_expert_hidden_backward_with_sums(const void* pre_bf16, const float* d_hidden, std::int64_t rows,
                                             std::int64_t width, bool gated, Act act, void* dz_bf16,
                                             const std::int64_t* chunk_rows, std::int64_t chunks,
                                             const std::int64_t* group_chunks, float* const* sums, int groups,
                                             double* partials, Stream stream);
// The bias and activation after a grouped bf16 GEMM: z = y[r, :] (bf16) + biases[group
// of r] (null entries: none); pre[r, :] = z when pre is not null; out[r, :] = act(z) (float).
void launch_expert_output(const void* y, const float* const* biases, const std::int64_t* offsets, int groups,
                          std::int64_t rows, std::int64_t cols, Act act, float* pre, float* out, Stream stream);

// The output epilogue and the weighted combine in one pass, for an inference forward
// (nothing reads the float32 expert output): dst[r, :] = Σ_{a in [offsets[r],
// offsets[r+1])} weights[a] · (y[sources[a] − first, :] + biases[group of that row]),
// in entry order, each term as launch_expert_output then launch_combine_rows compute
// it. y: bf16 [rows, cols]; group_offsets as above; weights null means 1.
void launch_combine_expert_output(const void* y, const float* const* biases, const std::int64_t* group_offsets,
                                  int groups, std::int64_t first, std::int64_t cols, std::int64_t n_out,
                                  const std::int32_t* offsets, const std::int32_t* sources, const float* weights,
                                  float* dst, Stream stream);

// launch_combine_expert_output's backward, for a training step that combined that way:
// for every entry a of output row r < n_out, d_src[sources[a], :] = weights[a] · d_dst[r,
// :] and d_weights[a] (may be null) = d_dst[r, :] · (y[sources[a] − first, :] + the
// bias of that row's group), the expert output the forward combined. Arguments as
// launch_combine_expert_output's; d_src is numbered as `sources` are.
void launch_combine_expert_output_backward(const void* y, const float* const* biases,
                                           const std::int64_t* group_offsets, int groups, std::int64_t first,
                                           std::int64_t cols, std::int64_t n_out, const std::int32_t* offsets,
                                           const std::int32_t* sources, const float* weights, const float* d_dst,
                                           float* d_src, float* d_weights, Stream stream);

}  // namespace moe::kernels::cuda
