// How often speculated rows (MOE_SPECULATIVE_ROWS=1; docs/design.md §4b) would hold for
// gpu_bench's batches, on the CPU: the guess depends on the routing only, and the CPU
// routes gpu_bench's inputs as the GPU does (its gate and batches drawn the same way),
// so this says which case gpu-check's section 7 times, hits or misses, without a GPU.
// The experts are 8 wide (their width does not change the routing), so a forward of
// gpu_bench's token counts takes a second or less.
//
//   speculation_hits [--experts 8 --top-k 2 --hidden 1024 --tokens 4096] [--inputs 4]
//                    [--steps 16] [--capacity-factor 0 (dropless)]
//                    [--router softmax|sigmoid --n-group G --topk-group g]
//
// Prints a line a forward (the most rows an expert kept, whether the guess held, and
// the rows the experts' products run for it), then the counts.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "kernels/plan_steps.hpp"  // the padded rows' multiple
#include "layer_access.hpp"  // how speculated rows fared
#include "moe/moe.hpp"

int main(int argc, char** argv) {
  CLI::App app{"How often the padded layer's speculated rows hold for gpu_bench's batches (CPU)"};
  std::int64_t E = 8, k = 2, H = 1024, T = 4096, groups = 1, topk_groups = 1;
  int inputs = 4, steps = 16;
  float capacity_factor = 0.0f;
  std::string router = "softmax";
  app.add_option("--experts", E)->check(CLI::PositiveNumber);
  app.add_option("--top-k", k)->check(CLI::PositiveNumber);
  app.add_option("--hidden", H)->check(CLI::PositiveNumber);
  app.add_option("--tokens", T)->check(CLI::PositiveNumber);
  app.add_option("--inputs", inputs, "batches cycled, one a forward, drawn as gpu_bench --inputs draws them")
      ->check(CLI::PositiveNumber);
  app.add_option("--steps", steps, "forwards")->check(CLI::PositiveNumber);
  app.add_option("--capacity-factor", capacity_factor, "0: dropless")->check(CLI::NonNegativeNumber);
  app.add_option("--router", router)->check(CLI::IsMember({"softmax", "sigmoid"}));
  app.add_option("--n-group", groups), app.add_option("--topk-group", topk_groups);
  CLI11_PARSE(app, argc, argv);

  // What the guess needs: the plan's steps where the routing is (which the CPU runs only
  // when asked), the padded layout, and the trial. A value the caller set is kept.
  setenv("MOE_SINGLE_RANK_PLAN", "steps", 0);
  setenv("MOE_EXPERT_ROWS", "padded", 0);
  setenv("MOE_SPECULATIVE_ROWS", "1", 0);

  moe::MOEConfig c(E, k, H, 8, capacity_factor > 0.0f ? capacity_factor : 1.0f);
  c.drop_tokens = capacity_factor > 0.0f;
  c.router = moe::parse_router(router);
  c.n_group = groups, c.topk_group = topk_groups;
  if (c.router == moe::RouterKind::Sigmoid) c.routed_scaling_factor = 2.5f;
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::MoELayer layer(c, *comm, 1);
  layer.set_gate_weights(moe::Tensor<float>({H, E}, moe::bench::random_vector(H * E, 0.02f, 11)));  // as gpu_bench
  std::vector<moe::Tensor<float>> batches;
  for (int i = 0; i < inputs; ++i)
    batches.emplace_back(std::vector<std::int64_t>{T, H},
                         moe::bench::random_vector(T * H, 1.0f, 10 + 100 * static_cast<unsigned>(i)));

  for (int s = 0; s < steps; ++s) {
    const auto before = moe::detail::LayerAccess::speculation(layer);
    const moe::ForwardResult r = layer.forward(batches[static_cast<std::size_t>(s % inputs)]);
    const auto after = moe::detail::LayerAccess::speculation(layer);
    const std::int64_t most = *std::max_element(r.stats.tokens_per_expert.begin(), r.stats.tokens_per_expert.end());
    const std::int64_t multiple = moe::kernels::plan::kPaddedRowsMultiple;
    const std::int64_t padded_to_most = (most + multiple - 1) / multiple * multiple;
    const bool guessed = after.hits + after.misses > before.hits + before.misses;
    const char* fared = !guessed ? "none made" : after.hits > before.hits ? "held" : "missed";
    std::printf("forward %d (batch %d): most rows kept %lld (mean %lld); speculated rows: %s", s, s % inputs,
                static_cast<long long>(most), static_cast<long long>((T * k + E - 1) / E), fared);
    // The products' rows against the T·k kept (dropless) a packed layout runs: a hit
    // runs E·R for the guess R, where padding to the most kept runs E·M.
    if (guessed)
      std::printf(" (R = %lld; E·R / T·k %.3f, padded to the most %.3f)", static_cast<long long>(after.last_rows),
                  double(E * after.last_rows) / double(T * k), double(E * padded_to_most) / double(T * k));
    std::printf("\n");
  }
  const auto total = moe::detail::LayerAccess::speculation(layer);
  std::printf("speculated rows: %lld held, %lld missed, of %d forwards\n", static_cast<long long>(total.hits),
              static_cast<long long>(total.misses), steps);
  return 0;
}
