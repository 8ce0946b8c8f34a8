// Token files for batch inference (docs/design.md §6): /tokens float32 [T, H] or [B, S, H] in,
// and the inference output file out. With P ranks, rank r takes the rows
// [floor(r·T/P), floor((r+1)·T/P)) of the flattened tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/communicator.hpp"
#include "moe/layer.hpp"
#include "moe/tensor.hpp"

namespace moe::checkpoint {

struct TokenBlock {
  std::vector<std::int64_t> file_shape;  // [T, H] or [B, S, H]
  std::int64_t total_rows = 0;           // T (or B·S)
  std::int64_t row_begin = 0, row_end = 0;
  Tensor<FLOAT_TYPE> rows;               // [row_end - row_begin, H]
};

// This rank's block of `path`'s tokens. Collective; every rank throws the same
// moe::CollectiveError when the file is missing, is not HDF5, lacks /tokens, or its
// shape does not end in hidden_dim.
TokenBlock read_token_block(const std::string& path, Communicator& comm, std::int64_t hidden_dim);

// Writes /tokens (one process; tokens [T, H] or [B, S, H]), atomically.
void write_token_file(const std::string& path, const Tensor<FLOAT_TYPE>& tokens);

// Collective: /output (the token file's shape), /expert_indices int32 [T, k],
// /expert_weights float32 [T, k], /aux_loss float32 [P], /dropped int64 [P]; every rank
// writes its own rows. Appears at `path` only when complete.
void write_inference_output(const std::string& path, Communicator& comm, const TokenBlock& block,
                            const ForwardResult& result, std::int64_t top_k);

}  // namespace moe::checkpoint
