// The expert layout, described once (docs/design.md §1b, §6): the tensors an expert is
// stored as, and the checkpoint datasets that view them. Storage, initialisation,
// flat views, gradients, optimizer state, checkpoints and `moe info` iterate over
// this table; a new expert kind, or a bias on or off, changes only the table and the
// math in expert_compute.
//
// Every kind is an input projection W_in [H, G·F] (+ b_in [G·F]) and an output
// projection W_out [F, H] (+ b_out [H]); G = 1 for ffn, 2 for glu, whose W_in holds
// the gate projection in columns [0, F) and the up projection in [F, 2F), so that both
// are one GEMM of width 2F. A flat expert is its tensors in storage order: for ffn
// with biases the reference API's [W1, W2, b1, b2].
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/config.hpp"

namespace moe {

enum ExpertTensorId : int { kWeightIn = 0, kWeightOut = 1, kBiasIn = 2, kBiasOut = 3 };

struct ExpertTensorSpec {
  ExpertTensorId id;
  std::int64_t rows, cols;  // per expert; a bias has rows = 1
  const char* name;         // as frameworks see the storage tensor: "w1", or "w_gate_up" for glu's W_in
  std::int64_t count() const { return rows * cols; }
};

// A checkpoint dataset: columns [col_begin, col_begin + cols) of a storage tensor.
struct ExpertDatasetSpec {
  const char* name;            // "w1", "w_gate", …: the dataset under /experts or /shared
  int tensor;                  // index into ExpertLayout::tensors
  std::int64_t col_begin, cols;
  std::vector<std::int64_t> shape;  // per expert: {rows, cols}, or {cols} for a bias
  std::int64_t fan_in;         // initialised uniform in ±1/√fan_in (PyTorch Linear's default)
  int init_part;               // its random stream within the expert
  const char* meaning;         // the axes, for messages, e.g. "(hidden_dim, expert_dim)"
  std::int64_t count() const { return shape.size() == 2 ? shape[0] * shape[1] : shape[0]; }
};

struct ExpertLayout {
  ExpertKind kind = ExpertKind::FFN;
  bool bias = true;
  std::int64_t hidden = 0, width = 0, in_width = 0;  // H, F, G·F
  std::vector<ExpertTensorSpec> tensors;    // storage and flat order
  std::vector<ExpertDatasetSpec> datasets;  // checkpoint order
  std::int64_t param_count = 0;             // elements of one flat expert

  // Index of a tensor in `tensors`, or -1 when absent (a bias of an unbiased layout).
  int index(ExpertTensorId id) const;
  std::int64_t flat_offset(int tensor) const;
};

// The routed experts' layout (width = expert_dim), and the shared expert's
// (width = shared_expert_dim).
ExpertLayout expert_layout(const MOEConfig& config);
ExpertLayout shared_expert_layout(const MOEConfig& config);
ExpertLayout expert_layout(ExpertKind kind, bool bias, std::int64_t hidden, std::int64_t width);

// Copies dataset d of `experts` consecutive experts out of (into) its storage tensor
// block [experts, rows, tensor cols] as a contiguous [experts, rows, d.cols] block.
void copy_dataset_out(const ExpertLayout& layout, const ExpertDatasetSpec& d, const float* tensor_block,
                      std::int64_t experts, float* out);
void copy_dataset_in(const ExpertLayout& layout, const ExpertDatasetSpec& d, const float* in, std::int64_t experts,
                     float* tensor_block);
// True when dataset d is its whole tensor (no copy needed).
bool dataset_is_whole_tensor(const ExpertLayout& layout, const ExpertDatasetSpec& d);

}  // namespace moe
