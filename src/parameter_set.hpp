// The trainable tensors of one layer on one rank, as one set: the router's gate, this
// rank's routed experts, and the shared expert with its gate. The layer's parameters,
// its gradients and each optimizer state (momentum, exp_avg, …) are ParameterSets of
// the same shapes, so optimizers, clipping and checkpoints walk them the same way.
#pragma once

#include <cstdint>
#include <vector>

#include "buffer.hpp"
#include "expert_storage.hpp"
#include "moe/config.hpp"

namespace moe {

struct ParameterSet {
  explicit ParameterSet(kernels::Ops& ops) : gate(ops), experts(ops), shared(ops), shared_gate(ops) {}

  Buffer<float> gate;          // [H, E], replicated on every rank
  ExpertStorage experts;       // this rank's routed experts
  ExpertStorage shared;        // the shared expert (1 expert, or none), replicated
  Buffer<float> shared_gate;   // [H] when the shared expert is gated, else empty

  // Sizes everything for `local_experts` routed experts of `config` (contents undefined).
  void resize(const MOEConfig& config, std::int64_t local_experts) {
    gate.resize(static_cast<std::size_t>(config.hidden_dim * config.num_experts));
    experts.resize(local_experts, expert_layout(config));
    shared.resize(config.shared_expert_dim > 0 ? 1 : 0, shared_expert_layout(config));
    shared_gate.resize(config.shared_gate ? static_cast<std::size_t>(config.hidden_dim) : 0);
  }
  void zero() {
    gate.zero();
    experts.zero();
    shared.zero();
    shared_gate.zero();
  }

  // One tensor of the set: its data, element count, and whether every rank holds the
  // same copy (replicated) or its own shard.
  struct Tensor {
    float* data;
    std::int64_t count;
    bool replicated;
  };
  // Every non-empty tensor, always in the same order, so that the i-th tensor of a
  // gradient or state set matches the i-th of the parameters.
  std::vector<Tensor> tensors() {
    std::vector<Tensor> out;
    auto add = [&](float* data, std::int64_t count, bool replicated) {
      if (count > 0) out.push_back({data, count, replicated});
    };
    add(gate.data(), static_cast<std::int64_t>(gate.size()), true);
    for (std::size_t i = 0; i < experts.tensor_count(); ++i) add(experts.tensor(i), experts.total_size(i), false);
    for (std::size_t i = 0; i < shared.tensor_count(); ++i) add(shared.tensor(i), shared.total_size(i), true);
    add(shared_gate.data(), static_cast<std::int64_t>(shared_gate.size()), true);
    return out;
  }
};

}  // namespace moe
