// The main correctness property (docs/design.md §2) as one check that the invariance
// tests share: a P-rank layer against the single-process layer on each rank's tokens.
#pragma once

#include <functional>
#include <map>
#include <random>

#include "moe/layer.hpp"

namespace moe::testing {

// How many random layers a sweep of `draws` runs at `ranks`: a third of them past two
// ranks, where CI runs 4 ranks on 2 cores and every collective waits for the scheduler
// (the invariance sweep's 60 draws took 9 s at 4 ranks against 0.03 s at 2); times
// sweep_scale() (support/random_architecture.hpp: MOE_TEST_SWEEP_SCALE, for soaks).
int sweep_draws(int draws, int ranks);

// The size of the expert groups of a random split of `ranks` (split_expert_parallel):
// a divisor below `ranks`, so that the groups have replicas; 1 at one rank, whose
// replicas communicator has that rank alone.
int random_expert_parallel_size(std::mt19937_64& rng, int ranks);

// world()'s expert groups of each size, split once (a split is collective, and over
// NCCL a new communicator) and kept for the layers of a sweep, which they must outlive.
class ExpertGroupsBySize {
 public:
  ExpertParallelGroups& of(int size);

 private:
  std::map<int, ExpertParallelGroups> groups_;
};

// A layer on world(): its experts sharded over every rank, or over `groups` with
// replicas when not null.
MoELayer make_world_layer(const MOEConfig& config, const LayerOptions& options, ExpertParallelGroups* groups);

// Random parameters everywhere (not the initial ones, whose biases are zero), the same
// on every rank: each tensor from its own seed (seed + 1, …), each local expert's from
// its global id; the gate's entries with standard deviation gate_scale (a small gate
// spreads the tokens, a large one piles them on a few experts).
void set_random_parameters(MoELayer& layer, std::uint64_t seed, double gate_scale);

// Builds the P-rank layer on world() with `options` (over `groups` with replicas, when
// not null) and the single-process layer on
// the CPU with the same options, gives both their parameters with `set_parameters`
// (which must set the same values on every rank, and may set only the local experts
// of a sharded layer), runs a training forward of x and a backward of g on each, and
// expects on every rank: the same output, choices, weights, aux and z-loss, drops and
// the loads summed over the expert group, and input gradient; the replicated tensors'
// gradients (gate, shared expert, shared gate) equal to the single-process ones summed
// over ranks; each local expert's gradient equal to the single-process gradient of the
// summed loss. Normwise relative error ≤ 1e-5, except the experts' gradients, ≤ 1e-4:
// their owner sums every rank's rows in one product, the reference each rank's and
// then the ranks, and with H = 1 a tensor of a few entries can cancel to a small part
// of its terms (4 of 18 000 random layers exceeded 1e-5, the largest at 2.3e-5; a soak
// of 45 000 found two past 1e-4; docs/design.md §2). The gate's gradient needs no floor:
// with k = 1 renormalised, where each weight is a constant, the router's backward gives
// exactly 0 through it (kernels/router_row.hpp).
// Collective: every rank must call it.
void expect_equal_to_the_single_process_layer(const MOEConfig& config, const LayerOptions& options,
                                              const Tensor<float>& x, const Tensor<float>& g,
                                              const std::function<void(MoELayer&)>& set_parameters,
                                              ExpertParallelGroups* groups = nullptr);

}  // namespace moe::testing
