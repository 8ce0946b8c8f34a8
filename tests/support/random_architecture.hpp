// Random layer configurations for property sweeps: every option of docs/design.md §1
// and §1b drawn independently (expert kind, activation, biases, router, group-limited
// top-k, scaling, shared expert and its gate, capacity or dropless, renormalisation),
// over small shapes that include the edges (F = 1, H = 1, k = E, one expert per
// rank). The hand-picked scenarios of the other tests name the combinations the
// published models use; a sweep reaches the ones nobody thought to list.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "moe/config.hpp"
#include "moe/layer.hpp"

namespace moe::testing {

// A positive whole number from the environment, or `unset`; anything else is the test
// run's mistake, named.
inline std::uint64_t positive_from_environment(const char* name, std::uint64_t unset) {
  const char* text = std::getenv(name);
  if (!text || !*text) return unset;
  char* end = nullptr;
  const unsigned long long value = std::strtoull(text, &end, 10);
  if (*end != '\0' || value == 0 || text[0] == '-')
    throw std::invalid_argument(std::string(name) + " = '" + text + "'; expected a positive whole number, or unset");
  return value;
}

// A sweep's seed: its own, or, when MOE_TEST_SWEEP_SEED is set, that value added to it,
// so that a soak draws layers CI has not (the same value reproduces them).
inline std::uint64_t sweep_seed(std::uint64_t own) { return own + positive_from_environment("MOE_TEST_SWEEP_SEED", 0); }

// How many times its draws a sweep runs: MOE_TEST_SWEEP_SCALE, else 1 (CI).
inline int sweep_scale() { return static_cast<int>(positive_from_environment("MOE_TEST_SWEEP_SCALE", 1)); }

// A uniform integer in [low, high].
inline std::int64_t draw(std::mt19937_64& rng, std::int64_t low, std::int64_t high) {
  return std::uniform_int_distribution<std::int64_t>(low, high)(rng);
}

inline bool coin(std::mt19937_64& rng) { return draw(rng, 0, 1) == 1; }

// A valid config whose expert count is a multiple of `ranks` (MoELayer shards the
// experts evenly).
inline MOEConfig random_architecture(std::mt19937_64& rng, std::int64_t ranks) {
  const std::int64_t per_rank = draw(rng, ranks == 1 ? 2 : 1, 5);
  const std::int64_t E = per_rank * ranks;
  // H and F mostly moderate, sometimes 1: a one-column GEMM is a shape of its own.
  const std::int64_t H = draw(rng, 0, 5) == 0 ? 1 : draw(rng, 2, 24);
  const std::int64_t F = draw(rng, 0, 5) == 0 ? 1 : draw(rng, 2, 20);
  const float capacity_factor = std::uniform_real_distribution<float>(1.0f, 2.0f)(rng);
  MOEConfig c(E, 1, H, F, capacity_factor);

  c.expert_kind = coin(rng) ? ExpertKind::GLU : ExpertKind::FFN;
  const Activation activations[] = {Activation::ReLU, Activation::GELU, Activation::SiLU, Activation::GELUTanh};
  c.activation = activations[draw(rng, 0, 3)];
  c.expert_bias = coin(rng);
  c.router = coin(rng) ? RouterKind::Sigmoid : RouterKind::Softmax;
  c.drop_tokens = draw(rng, 0, 3) != 0;
  c.normalize_top_k = draw(rng, 0, 3) != 0;
  if (coin(rng)) c.routed_scaling_factor = std::uniform_real_distribution<float>(0.5f, 3.0f)(rng);

  // Group-limited top-k on half the draws: a divisor of E as the group count.
  if (coin(rng)) {
    std::vector<std::int64_t> divisors;
    for (std::int64_t d = 2; d <= E && d <= 64; ++d)
      if (E % d == 0) divisors.push_back(d);
    if (!divisors.empty()) {
      c.n_group = divisors[static_cast<std::size_t>(draw(rng, 0, std::int64_t(divisors.size()) - 1))];
      c.topk_group = draw(rng, 1, c.n_group);
    }
  }
  const std::int64_t choosable = c.n_group > 1 ? c.topk_group * (E / c.n_group) : E;
  c.top_k = draw(rng, 1, std::min<std::int64_t>(choosable, 6));

  const std::int64_t shared = draw(rng, 0, 2);  // none, plain, gated
  if (shared > 0) c.shared_expert_dim = draw(rng, 1, 12);
  c.shared_gate = shared == 2;
  c.validate();
  return c;
}

// `base` (the device under test) with a random traffic mode and loss weights: the aux
// loss on or off, and the z-loss on or off where the router has one (softmax).
inline LayerOptions random_layer_options(std::mt19937_64& rng, const MOEConfig& c, LayerOptions base) {
  base.traffic = coin(rng) ? TrafficMode::Deduplicated : TrafficMode::PerAssignment;
  base.aux_loss_coef = coin(rng) ? 0.0f : 0.05f;
  base.z_loss_coef = c.router == RouterKind::Softmax && coin(rng) ? 0.02f : 0.0f;
  return base;
}

}  // namespace moe::testing
