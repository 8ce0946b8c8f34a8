// Deterministic parameter initialisation: every value is a function of the seed, the
// tensor's role and the expert's global id only, so a model is the same at any P.
#pragma once

#include <cstdint>

#include "moe/config.hpp"

namespace moe {

// Uniform in [-bound, bound), from a counter-based stream (splitmix64) named by
// (seed, stream): reproducible on every platform and compiler.
void fill_uniform(float* out, std::int64_t count, float bound, std::uint64_t seed, std::uint64_t stream);

// Standard normal values (Box–Muller) from the same kind of stream.
void fill_normal(float* out, std::int64_t count, std::uint64_t seed, std::uint64_t stream);

// PyTorch Linear's default scales: weights and bias of a layer with fan-in n in ±1/√n.
void init_gate_weights(float* out, const MOEConfig& config, std::uint64_t seed);
// A routed expert and the shared expert as flat tensors (expert_layout.hpp), and the
// shared expert's gate [H].
void init_expert_params(float* flat, const MOEConfig& config, std::uint64_t seed, std::int64_t global_id);
void init_shared_expert_params(float* flat, const MOEConfig& config, std::uint64_t seed);
void init_shared_gate_weights(float* out, const MOEConfig& config, std::uint64_t seed);

}  // namespace moe
