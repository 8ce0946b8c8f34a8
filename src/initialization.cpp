#include "initialization.hpp"

#include <cmath>
#include <vector>

#include "expert_layout.hpp"

namespace moe {
namespace {

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Streams: 0 is the gate; routed ffn expert e uses 4·(e+1) + its dataset's part
// (W1, W2, b1, b2), as before glu existed, so ffn models keep their values; glu
// experts and the shared expert have streams of their own above 2^32.
constexpr std::uint64_t kGateStream = 0;
constexpr std::uint64_t kGluBase = std::uint64_t{1} << 32;
constexpr std::uint64_t kSharedBase = std::uint64_t{2} << 32;
constexpr std::uint64_t kSharedGateStream = kSharedBase + 16;
std::uint64_t expert_stream(ExpertKind kind, std::int64_t global_id, int part) {
  const auto id = static_cast<std::uint64_t>(global_id) + 1;
  return kind == ExpertKind::GLU ? kGluBase + 8 * id + static_cast<std::uint64_t>(part)
                                 : 4 * id + static_cast<std::uint64_t>(part);
}

// Every dataset of `layout` into its place in the flat expert.
template <class Stream>
void init_flat_expert(float* flat, const ExpertLayout& layout, std::uint64_t seed, Stream stream_of_part);

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
  init_flat_expert(flat, expert_layout(config), seed,
                   [&](int part) { return expert_stream(config.expert_kind, global_id, part); });
}

void init_shared_expert_params(float* flat, const MOEConfig& config, std::uint64_t seed) {
  init_flat_expert(flat, shared_expert_layout(config), seed,
                   [](int part) { return kSharedBase + static_cast<std::uint64_t>(part); });
}

void init_shared_gate_weights(float* out, const MOEConfig& config, std::uint64_t seed) {
  fill_uniform(out, config.hidden_dim, 1.0f / std::sqrt(static_cast<float>(config.hidden_dim)), seed,
               kSharedGateStream);
}

namespace {

template <class Stream>
void init_flat_expert(float* flat, const ExpertLayout& layout, std::uint64_t seed, Stream stream_of_part) {
  std::vector<float> values;
  for (const ExpertDatasetSpec& d : layout.datasets) {
    values.resize(static_cast<std::size_t>(d.count()));
    fill_uniform(values.data(), d.count(), 1.0f / std::sqrt(static_cast<float>(d.fan_in)), seed,
                 stream_of_part(d.init_part));
    copy_dataset_in(layout, d, values.data(), 1, flat + layout.flat_offset(d.tensor));
  }
}

}  // namespace
}  // namespace moe
