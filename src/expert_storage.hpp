// A set of experts stored tensor by tensor, in the layout of expert_layout.hpp: tensor
// i of every expert is one [n, rows, cols] block. A rank's slice of each checkpoint
// dataset is then one contiguous block (one HDF5 transfer, not one per expert), and
// gradients and optimizer state use the same type. The routed experts of a rank, and
// the shared expert (n = 1), are each one ExpertStorage.
#pragma once

#include <cstdint>
#include <vector>

#include "buffer.hpp"
#include "expert_compute.hpp"
#include "expert_layout.hpp"

namespace moe {

struct ExpertStorage {
  explicit ExpertStorage(kernels::Ops& ops) : ops_(&ops) {}

  // Room for `experts` experts of `layout` (contents undefined).
  void resize(std::int64_t experts, const ExpertLayout& layout);
  void zero();

  ExpertParams params(std::int64_t e) const;
  ExpertGradients grads(std::int64_t e);
  std::size_t tensor_count() const { return tensors.size(); }
  float* tensor(std::size_t i) { return tensors[i].data(); }
  const float* tensor(std::size_t i) const { return tensors[i].data(); }
  std::int64_t tensor_size(std::size_t i) const { return layout.tensors[i].count(); }  // per expert
  std::int64_t total_size(std::size_t i) const { return experts * tensor_size(i); }

  // One expert as a flat tensor (the tensors in order), in host memory.
  void copy_to_flat(std::int64_t e, float* flat) const;
  void copy_from_flat(std::int64_t e, const float* flat);

  std::int64_t experts = 0;
  ExpertLayout layout;
  std::vector<Buffer<float>> tensors;

 private:
  kernels::Ops* ops_;
};

}  // namespace moe
