// Argument checks shared by the single-process API and the layer, so each bad input
// gets the same message wherever it enters.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/config.hpp"
#include "moe/tensor.hpp"

namespace moe::checks {

// The input is [T,H] or [B,S,H].
void input_rank(const std::vector<std::int64_t>& shape, const char* where);

// Number of tokens T of an input [T,H] or [B,S,H] whose last dimension must be the
// config's hidden_dim; also checks that T·k fits the int32 indices.
std::int64_t input_tokens(const std::vector<std::int64_t>& shape, const MOEConfig& config,
                          const char* where);

// gate_weights must be [hidden_dim, num_experts]; input_hidden is the input's last dim.
void gate_weights(const std::vector<std::int64_t>& shape, std::int64_t input_hidden,
                  const MOEConfig& config, const char* where);

// A [T, k] tensor (expert weights or indices).
void routing_shape(const std::vector<std::int64_t>& shape, std::int64_t tokens,
                   const MOEConfig& config, const char* name, const char* where);

// Every id in [0, E).
void expert_indices_in_range(const std::int32_t* indices, std::int64_t tokens,
                             const MOEConfig& config, const char* where);

// One expert's flat parameters: 2·H·F + F + H elements.
void flat_expert_params(std::int64_t numel, const MOEConfig& config, const char* name,
                        const char* where);

}  // namespace moe::checks
