// Single-process benchmark: median ms per forward (the reference API for the reference
// layer, else MoELayer on one rank) or per forward + backward (MoELayer on one rank),
// tokens/s, GFLOP/s and the ratio to cblas_sgemm doing the same FLOPs in the same run.
// --mode step times a training step as `moe train` takes it, less its data: zero_grad,
// forward, backward, clipping to norm 1 and AdamW (bench/job-vs-step.sh sets the job
// beside it).
// Usage: moe_bench [--mode forward|training|step] [--config ref,mid,fine,mixtral,deepseek]
//                  [--expert-kind ffn|glu] [--activation relu|gelu|gelu_tanh|silu]
//                  [--router softmax|sigmoid] … [--reps N] [--csv]
#include <omp.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>
#include <optional>
#include <sstream>

#include "bench_util.hpp"
#include "moe/layer.hpp"
#include "moe/moe.hpp"
#include "moe/optimizer.hpp"

namespace {

struct BenchConfig {
  std::string name;
  std::int64_t E, k, H, F, T;
  int reps;
  // The architecture (docs/design.md §1b); the reference layer unless set.
  moe::ExpertKind kind = moe::ExpertKind::FFN;
  moe::RouterKind router = moe::RouterKind::Softmax;
  std::int64_t n_group = 1, topk_group = 1, shared = 0;
  bool bias = true;
  bool dropless = false;  // no capacity: every assignment is computed
  std::string activation;  // empty: the expert kind's default (relu for ffn, silu for glu)
};

// mixtral: Mixtral-like glu experts scaled to a 2-core machine. deepseek: the
// fine-grained DeepSeek-like layer (sigmoid router, 8 groups, shared expert).
const std::map<std::string, BenchConfig> kConfigs = {
    {"ref", {"ref", 8, 2, 512, 2048, 128, 60}},
    {"mid", {"mid", 8, 2, 1024, 4096, 4096, 7}},
    {"fine", {"fine", 64, 8, 1024, 512, 4096, 7}},
    {"mixtral", {"mixtral", 8, 2, 1024, 3584, 4096, 5, moe::ExpertKind::GLU, moe::RouterKind::Softmax, 1, 1, 0, false}},
    {"deepseek",
     {"deepseek", 64, 6, 1024, 352, 4096, 7, moe::ExpertKind::GLU, moe::RouterKind::Sigmoid, 8, 4, 704, false}},
};

moe::MOEConfig layer_config(const BenchConfig& bc) {
  moe::MOEConfig c(bc.E, bc.k, bc.H, bc.F);
  c.expert_kind = bc.kind;
  c.activation = bc.activation.empty() ? moe::default_activation(bc.kind) : moe::parse_activation(bc.activation);
  c.expert_bias = bc.bias;
  c.router = bc.router;
  c.n_group = bc.n_group, c.topk_group = bc.topk_group;
  c.shared_expert_dim = bc.shared;
  c.drop_tokens = !bc.dropless;
  return c;
}

std::string arch_text(const BenchConfig& bc) { return layer_config(bc).to_string(); }

// The reference API's layer: ffn ReLU experts with biases, softmax, capacity. An explicit
// --activation relu (as bench/compare_pytorch.py passes) is still that layer.
bool is_reference_layer(const BenchConfig& bc) {
  return bc.kind == moe::ExpertKind::FFN && bc.bias && bc.router == moe::RouterKind::Softmax && bc.n_group == 1 &&
         bc.shared == 0 && !bc.dropless && layer_config(bc).activation == moe::Activation::ReLU;
}

moe::bench::DenseGemmBaseline baseline_for(const BenchConfig& bc, int threads) {
  return moe::bench::DenseGemmBaseline(bc.T, bc.k, bc.H, bc.F, bc.E, threads, bc.kind == moe::ExpertKind::GLU ? 2 : 1,
                                       bc.shared);
}

struct Result {
  BenchConfig config;
  double moe_s, sgemm_s, flops;
  std::int64_t dropped_share_ppm;
};

// Forward (Pass::Inference), forward + backward, or a whole training step of the layer on
// one rank, the loss's gradient fixed.
enum class LayerMode { Forward, Training, Step };
Result run_layer(const BenchConfig& bc, LayerMode mode, int reps_override, int threads) {
  const bool training = mode != LayerMode::Forward;
  const moe::MOEConfig config = layer_config(bc);
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::LayerOptions options;
  options.z_loss_coef = config.router == moe::RouterKind::Softmax ? 1e-3f : 0.0f;
  moe::MoELayer layer(config, *comm, 1, options);
  // A small gate keeps routing near uniform, as a trained, load-balanced router is.
  layer.set_gate_weights(moe::Tensor<float>({bc.H, bc.E}, moe::bench::random_vector(bc.H * bc.E, 0.02f, 11)));
  const moe::Tensor<float> x({bc.T, bc.H}, moe::bench::random_vector(bc.T * bc.H, 1.0f, 10));
  const moe::Tensor<float> grad({bc.T, bc.H}, moe::bench::random_vector(bc.T * bc.H, 1e-3f, 12));
  // The layer's pointer API, as a framework calls it: output and input gradient land
  // in buffers the caller keeps, so no fresh memory is touched per call.
  std::vector<float> out(static_cast<std::size_t>(bc.T * bc.H)), d_x(out.size());
  std::optional<moe::Optimizer> adamw;
  if (mode == LayerMode::Step) adamw.emplace(moe::Optimizer::adamw(layer));
  auto step = [&] {
    if (adamw) layer.zero_grad();
    layer.forward(x.data(), bc.T, out.data(), training ? moe::Pass::Training : moe::Pass::Inference);
    if (training) layer.backward(grad.data(), d_x.data());
    if (adamw) moe::clip_grad_norm(layer, 1.0), adamw->step();
  };
  moe::bench::DenseGemmBaseline baseline = baseline_for(bc, threads);
  const int reps = reps_override > 0 ? reps_override : bc.reps;
  const auto medians = moe::bench::interleaved_medians(
      {step, [&] { training ? baseline.run_training() : baseline.run(); }}, 2, reps);
  return {bc, medians[0], medians[1], training ? baseline.training_flops() : baseline.flops(), 0};
}

Result run(const BenchConfig& bc, int reps_override, int threads) {
  const moe::MOEConfig config(bc.E, bc.k, bc.H, bc.F);
  moe::Tensor<float> x({bc.T, bc.H}, moe::bench::random_vector(bc.T * bc.H, 1.0f, 10));
  // A small gate keeps routing near uniform, as a trained, load-balanced router is.
  moe::Tensor<float> gate({bc.H, bc.E}, moe::bench::random_vector(bc.H * bc.E, 0.02f, 11));
  std::vector<moe::Tensor<float>> experts;
  for (std::int64_t e = 0; e < bc.E; ++e)
    experts.emplace_back(std::vector<std::int64_t>{config.expert_param_count()},
                         moe::bench::random_vector(config.expert_param_count(), 0.02f, 100 + e));

  std::int64_t kept = 0;
  auto forward = [&] {
    auto [weights, indices, loss] = moe::moe_gating_forward(x, gate, config);
    moe::Tensor<float> out = moe::moe_expert_computation(x, weights, indices, experts, config);
    kept = out.numel();
  };
  moe::bench::DenseGemmBaseline baseline = baseline_for(bc, threads);
  const int reps = reps_override > 0 ? reps_override : bc.reps;
  const auto medians = moe::bench::interleaved_medians({forward, [&] { baseline.run(); }}, 2, reps);
  (void)kept;
  return {bc, medians[0], medians[1], baseline.flops(), 0};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moe forward benchmark against cblas_sgemm of the same FLOPs"};
  std::string configs = "ref,mid,fine";
  int reps = 0;
  bool csv = false;
  std::string mode = "forward";
  app.add_option("--mode", mode,
                 "forward (reference API), training (MoELayer forward + backward) or step (training + "
                 "gradient clipping + AdamW, as moe train steps)")
      ->check(CLI::IsMember({"forward", "training", "step"}));
  app.add_option("--config", configs, "comma-separated: ref, mid, fine, mixtral, deepseek");
  // Overrides of the named configs' architecture.
  std::string kind, router, activation;
  std::int64_t n_group = 0, topk_group = 0, shared = -1, tokens = 0;
  bool no_bias = false, dropless = false;
  app.add_option("--expert-kind", kind, "ffn or glu")->check(CLI::IsMember({"ffn", "glu"}));
  app.add_option("--router", router, "softmax or sigmoid")->check(CLI::IsMember({"softmax", "sigmoid"}));
  app.add_option("--activation", activation, "relu, gelu, gelu_tanh or silu (default: relu for ffn, silu for glu)")
      ->check(CLI::IsMember({"relu", "gelu", "gelu_tanh", "silu"}));
  app.add_option("--n-group", n_group, "expert groups (group-limited top-k)");
  app.add_option("--topk-group", topk_group, "groups a token may use");
  app.add_option("--shared-expert-dim", shared, "shared expert width (0: none)");
  app.add_flag("--no-expert-bias", no_bias, "experts without biases");
  app.add_flag("--dropless", dropless, "no capacity limit (runs MoELayer, not the reference API)");
  app.add_option("--tokens", tokens, "tokens per forward (default per config)")->check(CLI::PositiveNumber);
  app.add_option("--reps", reps, "timed repetitions per candidate (default per config)");
  app.add_flag("--csv", csv, "print CSV rows instead of a table");
  CLI11_PARSE(app, argc, argv);

  const int threads = omp_get_max_threads();
  std::vector<Result> results;
  std::stringstream list(configs);
  for (std::string name; std::getline(list, name, ',');) {
    const auto it = kConfigs.find(name);
    if (it == kConfigs.end()) {
      std::fprintf(stderr, "moe_bench: --config %s is not one of ref, mid, fine, mixtral, deepseek\n", name.c_str());
      return 2;
    }
    BenchConfig bc = it->second;
    if (!kind.empty()) bc.kind = moe::parse_expert_kind(kind);
    if (!router.empty()) bc.router = moe::parse_router(router);
    if (!activation.empty()) bc.activation = activation;
    if (n_group > 0) bc.n_group = n_group;
    if (topk_group > 0) bc.topk_group = topk_group;
    if (shared >= 0) bc.shared = shared;
    if (no_bias) bc.bias = false;
    if (tokens > 0) bc.T = tokens;
    bc.dropless = dropless;
    if (mode == "training") results.push_back(run_layer(bc, LayerMode::Training, reps, threads));
    else if (mode == "step") results.push_back(run_layer(bc, LayerMode::Step, reps, threads));
    else if (is_reference_layer(bc)) results.push_back(run(bc, reps, threads));
    else results.push_back(run_layer(bc, LayerMode::Forward, reps, threads));
  }

  if (csv) {
    std::printf("config,E,k,H,F,T,threads,moe_ms,sgemm_ms,gflops,ratio,mode,arch\n");
    for (const auto& r : results)
      std::printf("%s,%ld,%ld,%ld,%ld,%ld,%d,%.3f,%.3f,%.1f,%.3f,%s,%s\n", r.config.name.c_str(), r.config.E,
                  r.config.k, r.config.H, r.config.F, r.config.T, threads, r.moe_s * 1e3, r.sgemm_s * 1e3,
                  r.flops / r.moe_s / 1e9, r.sgemm_s / r.moe_s, mode.c_str(), arch_text(r.config).c_str());
    return 0;
  }
  std::printf("moe %s vs cblas_sgemm of the same FLOPs, %d thread(s)\n",
              mode == "training" ? "forward + backward (MoELayer, 1 rank)"
              : mode == "step"   ? "training step: forward + backward + clipping + AdamW (MoELayer, 1 rank)"
                                 : "forward (reference API for the reference layer, else MoELayer)",
              threads);
  std::printf("%-5s %3s %2s %5s %5s %5s | %9s %11s %8s | %9s %8s | %6s\n", "cfg", "E", "k", "H", "F", "T",
              "moe ms", "tokens/s", "GFLOP/s", "sgemm ms", "GFLOP/s", "ratio");
  for (const auto& r : results) {
    const auto& c = r.config;
    std::printf("%-5s %3ld %2ld %5ld %5ld %5ld | %9.2f %11.0f %8.1f | %9.2f %8.1f | %6.3f\n", c.name.c_str(),
                c.E, c.k, c.H, c.F, c.T, r.moe_s * 1e3, double(c.T) / r.moe_s, r.flops / r.moe_s / 1e9,
                r.sgemm_s * 1e3, r.flops / r.sgemm_s / 1e9, r.sgemm_s / r.moe_s);
    if (!is_reference_layer(c)) std::printf("      (%s)\n", arch_text(c).c_str());
  }
  std::printf("ratio = sgemm time / moe time (1.0 = the MoE layer runs at dense-GEMM speed)\n");
  return 0;
}
