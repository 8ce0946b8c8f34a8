// A rank's experts stored tensor by tensor, as the checkpoint lays them out:
// w1 [n, H, F], w2 [n, F, H], b1 [n, F], b2 [n, H]. A rank's slice of each checkpoint
// dataset is then one contiguous block (one HDF5 transfer, not one per expert), and
// optimizer state and gradients use the same type.
#pragma once

#include <cstdint>

#include "buffer.hpp"
#include "expert_compute.hpp"
#include "moe/config.hpp"

namespace moe {

struct ExpertStorage {
  explicit ExpertStorage(kernels::Ops& ops) : w1(ops), w2(ops), b1(ops), b2(ops) {}

  // Room for `experts` experts of `config`'s shape (contents undefined).
  void resize(std::int64_t experts, const MOEConfig& config);
  void zero();

  ExpertParams params(std::int64_t e) const;
  // The four tensors in checkpoint order (w1, w2, b1, b2), and elements per expert.
  float* tensor(int i);
  const float* tensor(int i) const;
  std::int64_t tensor_size(int i) const;

  // One expert in the reference flat layout [W1, W2, b1, b2], in host memory.
  void copy_to_flat(kernels::Ops& ops, std::int64_t e, float* flat) const;
  void copy_from_flat(kernels::Ops& ops, std::int64_t e, const float* flat);

  std::int64_t experts = 0, hidden_dim = 0, expert_dim = 0;
  Buffer<float> w1, w2, b1, b2;
};

}  // namespace moe
