#include "initialization.hpp"

#include <cmath>
#include <vector>

#include "expert_layout.hpp"
#include "kernels/random_stream.hpp"

namespace moe {
namespace {

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

}  // namespace

void fill_uniform(float* out, std::int64_t count, float bound, std::uint64_t seed, std::uint64_t stream) {
  // Each draw from the stream's start alone (kernels/random_stream.hpp): on every core,
  // with the serial loop's values (a DeepSeek-like rank holds 2.8 billion expert values).
  const std::uint64_t start = kernels::stream_start(seed, stream);
#pragma omp parallel for schedule(static) if (count > (std::int64_t{1} << 20))
  for (std::int64_t i = 0; i < count; ++i)
    out[i] = static_cast<float>((2.0 * kernels::unit_draw(start, static_cast<std::uint64_t>(i)) - 1.0) * bound);
}

void fill_normal(float* out, std::int64_t count, std::uint64_t seed, std::uint64_t stream) {
  kernels::fill_normal_on_host(out, count, kernels::stream_start(seed, stream));
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
