#include "initialization.hpp"

#include <cmath>

namespace moe {
namespace {

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Streams: 0 is the gate; expert e uses 4·(e+1) + {0: W1, 1: W2, 2: b1, 3: b2}.
constexpr std::uint64_t kGateStream = 0;
std::uint64_t expert_stream(std::int64_t global_id, int part) {
  return 4 * (static_cast<std::uint64_t>(global_id) + 1) + static_cast<std::uint64_t>(part);
}

std::uint64_t stream_state(std::uint64_t seed, std::uint64_t stream) {
  std::uint64_t state = seed;
  return splitmix64(state) ^ (stream * 0xD1B54A32D192ED03ull);
}

double unit_interval(std::uint64_t& state) {  // [0, 1), 53 random bits
  return static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53;
}

}  // namespace

void fill_uniform(float* out, std::int64_t count, float bound, std::uint64_t seed, std::uint64_t stream) {
  std::uint64_t state = stream_state(seed, stream);
  for (std::int64_t i = 0; i < count; ++i) out[i] = static_cast<float>((2.0 * unit_interval(state) - 1.0) * bound);
}

void fill_normal(float* out, std::int64_t count, std::uint64_t seed, std::uint64_t stream) {
  std::uint64_t state = stream_state(seed, stream);
  for (std::int64_t i = 0; i < count; i += 2) {  // two normals per pair of uniforms
    const double r = std::sqrt(-2.0 * std::log(1.0 - unit_interval(state)));
    const double angle = 6.283185307179586 * unit_interval(state);
    out[i] = static_cast<float>(r * std::cos(angle));
    if (i + 1 < count) out[i + 1] = static_cast<float>(r * std::sin(angle));
  }
}

void init_gate_weights(float* out, const MOEConfig& config, std::uint64_t seed) {
  fill_uniform(out, config.hidden_dim * config.num_experts,
               1.0f / std::sqrt(static_cast<float>(config.hidden_dim)), seed, kGateStream);
}

void init_expert_params(float* flat, const MOEConfig& config, std::uint64_t seed, std::int64_t global_id) {
  const std::int64_t H = config.hidden_dim, F = config.expert_dim;
  const float in_bound = 1.0f / std::sqrt(static_cast<float>(H));
  const float hidden_bound = 1.0f / std::sqrt(static_cast<float>(F));
  fill_uniform(flat, H * F, in_bound, seed, expert_stream(global_id, 0));                  // W1
  fill_uniform(flat + H * F, F * H, hidden_bound, seed, expert_stream(global_id, 1));      // W2
  fill_uniform(flat + 2 * H * F, F, in_bound, seed, expert_stream(global_id, 2));          // b1
  fill_uniform(flat + 2 * H * F + F, H, hidden_bound, seed, expert_stream(global_id, 3));  // b2
}

}  // namespace moe
