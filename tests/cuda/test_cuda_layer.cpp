// MoELayer on the GPU against the same layer on the CPU, one rank: forward in each
// precision, backward, optimizer steps and a checkpoint round trip. Normwise relative
// error: 1e-5 in FP32, 5e-3 TF32, 3e-2 BF16. Skips without a GPU. (The multi-rank
// invariance tests also run on the GPU: ctest -L cuda runs tests/mpi with
// MOE_TEST_DEVICE=cuda.)
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <utility>
#include <unistd.h>

#include "buffer.hpp"
#include "kernels/ops.hpp"
#include "layer_access.hpp"
#include "moe/checkpoint.hpp"
#include "moe/layer.hpp"
#include "moe/optimizer.hpp"
#include "support/test_util.hpp"

using moe::MOEConfig;
using moe::Tensor;
using moe::testing::relative_error;
using moe::testing::ScopedEnvironment;

namespace {

class CudaLayer : public ::testing::Test {
 protected:
  void SetUp() override {
    if (moe::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  }
  moe::LayerOptions on(moe::Device device, moe::Precision precision = moe::Precision::FP32) {
    moe::LayerOptions o;
    o.device = device;
    o.precision = precision;
    o.z_loss_coef = 1e-3f;
    return o;
  }
  std::unique_ptr<moe::Communicator> comm = moe::make_communicator(moe::CommBackend::Local);
  MOEConfig config{8, 2, 64, 256, 1.0f};
  Tensor<float> x = moe::testing::random_tensor({4, 50, 64}, 1.0, 1);
  Tensor<float> grad = moe::testing::random_tensor({4, 50, 64}, 1.0, 2);
};

TEST_F(CudaLayer, ForwardMatchesTheCpuInEveryPrecision) {
  moe::MoELayer cpu(config, *comm, 7, on(moe::Device::CPU));
  const moe::ForwardResult expected = cpu.forward(x);
  for (auto p : {moe::Precision::FP32, moe::Precision::TF32, moe::Precision::BF16}) {
    moe::MoELayer gpu(config, *comm, 7, on(moe::Device::CUDA, p));
    const moe::ForwardResult got = gpu.forward(x);
    const double tol = p == moe::Precision::FP32 ? 1e-5 : p == moe::Precision::TF32 ? 5e-3 : 3e-2;
    EXPECT_LE(relative_error(got.output.data(), expected.output.data(), x.numel()), tol) << moe::precision_name(p);
    EXPECT_NEAR(got.aux_loss, expected.aux_loss, 1e-4);
    if (p == moe::Precision::FP32) {
      EXPECT_TRUE(std::equal(got.expert_indices.begin(), got.expert_indices.end(), expected.expert_indices.begin()));
      EXPECT_EQ(got.stats.dropped, expected.stats.dropped);
    }
  }
}

TEST_F(CudaLayer, BackwardAndOptimizerStepsMatchTheCpu) {
  moe::MoELayer cpu(config, *comm, 7, on(moe::Device::CPU));
  moe::MoELayer gpu(config, *comm, 7, on(moe::Device::CUDA));
  moe::Optimizer cpu_opt = moe::Optimizer::adamw(cpu), gpu_opt = moe::Optimizer::adamw(gpu);
  for (int step = 0; step < 3; ++step) {
    for (moe::MoELayer* l : {&cpu, &gpu}) l->zero_grad(), l->forward(x, moe::Pass::Training);
    const Tensor<float> dx_cpu = cpu.backward(grad), dx_gpu = gpu.backward(grad);
    EXPECT_LE(relative_error(dx_gpu.data(), dx_cpu.data(), x.numel()), 1e-5) << "input gradient, step " << step;
    const Tensor<float> g_cpu = cpu.gate_grad(), g_gpu = gpu.gate_grad();
    EXPECT_LE(relative_error(g_gpu.data(), g_cpu.data(), g_cpu.numel()), 1e-5) << "gate gradient";
    for (std::int64_t e = 0; e < 8; ++e) {
      const Tensor<float> a = cpu.expert_grad(e), b = gpu.expert_grad(e);
      EXPECT_LE(relative_error(b.data(), a.data(), a.numel()), 1e-5) << "expert " << e;
    }
    EXPECT_NEAR(moe::clip_grad_norm(gpu, 0.0), moe::clip_grad_norm(cpu, 0.0), 1e-5 * moe::clip_grad_norm(cpu, 0.0));
    cpu_opt.step();
    gpu_opt.step();
  }
  const Tensor<float> a = cpu.expert_params(3), b = gpu.expert_params(3);
  EXPECT_LE(relative_error(b.data(), a.data(), a.numel()), 1e-5) << "parameters after three AdamW steps";
}

// A padded layout on the GPU (`options` adds it to each precision's) against the packed
// layer on the CPU: an inference forward (bf16: the fused gather, products and combine,
// no float32 scratch) and a training forward in fp32 and bf16 (the second reusing the
// first's buffers), and a training step's gradients in fp32.
void expect_padded_matches_the_cpu(const MOEConfig& config, moe::Communicator& comm, const Tensor<float>& x,
                                   const Tensor<float>& grad,
                                   const std::function<moe::LayerOptions(moe::Precision)>& options) {
  moe::LayerOptions on_cpu;
  on_cpu.z_loss_coef = 1e-3f;
  moe::MoELayer cpu(config, comm, 7, on_cpu);
  const moe::ForwardResult expected = cpu.forward(x, moe::Pass::Training);
  const Tensor<float> dx_cpu = cpu.backward(grad);
  for (auto p : {moe::Precision::FP32, moe::Precision::BF16}) {
    SCOPED_TRACE(moe::precision_name(p));
    moe::MoELayer gpu(config, comm, 7, options(p));
    const double tol = p == moe::Precision::FP32 ? 1e-5 : 3e-2;
    const moe::ForwardResult inferred = gpu.forward(x, moe::Pass::Inference);
    EXPECT_LE(relative_error(inferred.output.data(), expected.output.data(), x.numel()), tol) << "inference";
    const moe::ForwardResult got = gpu.forward(x, moe::Pass::Training);
    EXPECT_LE(relative_error(got.output.data(), expected.output.data(), x.numel()), tol) << "training";
    EXPECT_EQ(got.stats.tokens_per_expert, expected.stats.tokens_per_expert);
    if (p != moe::Precision::FP32) continue;
    const Tensor<float> dx_gpu = gpu.backward(grad);
    EXPECT_LE(relative_error(dx_gpu.data(), dx_cpu.data(), x.numel()), 1e-5) << "input gradient";
    for (std::int64_t e = 0; e < config.num_experts; ++e) {
      const Tensor<float> a = cpu.expert_grad(e), b = gpu.expert_grad(e);
      EXPECT_LE(relative_error(b.data(), a.data(), a.numel()), 1e-5) << "expert " << e;
    }
  }
}

// Capacity-padded experts (LayerOptions::static_shapes: the plan kernels with
// rows_per_expert, zero padding rows).
TEST_F(CudaLayer, StaticShapesMatchThePackedLayerOnTheCpu) {
  expect_padded_matches_the_cpu(config, *comm, x, grad, [&](moe::Precision p) {
    moe::LayerOptions options = on(moe::Device::CUDA, p);
    options.static_shapes = true;
    return options;
  });
}

// Experts padded to the most rows kept (here each forward pads: 50 or fewer rows kept
// of a room of 56): by default in bf16, its products batched in one launch as the size
// rule picks for bf16 groups of one row count; then asked for in both precisions with
// the batched launch forced (MOE_EXPERT_ROWS=padded, MOE_GROUPED_GEMM=batched).
TEST_F(CudaLayer, ExpertsPaddedToTheMostMatchThePackedLayerOnTheCpu) {
  for (const bool asked : {false, true}) {
    SCOPED_TRACE(asked ? "asked for, batched forced" : "by default");
    const ScopedEnvironment rows("MOE_EXPERT_ROWS", asked ? "padded" : "");
    const ScopedEnvironment method("MOE_GROUPED_GEMM", asked ? "batched" : "");
    expect_padded_matches_the_cpu(config, *comm, x, grad, [&](moe::Precision p) { return on(moe::Device::CUDA, p); });
  }
}

// The padded layout by default where it was measured faster, and nowhere else: bf16 on
// the GPU (one rank, shapes not static, the plan steps not refused); MOE_EXPERT_ROWS
// decides when set.
TEST_F(CudaLayer, PadsItsExpertsByDefaultOnlyInBf16) {
  using moe::detail::LayerAccess;
  auto pads = [&](moe::LayerOptions options) {
    moe::MoELayer layer(config, *comm, 7, options);
    return LayerAccess::pads_experts(layer);
  };
  EXPECT_TRUE(pads(on(moe::Device::CUDA, moe::Precision::BF16)));
  EXPECT_FALSE(pads(on(moe::Device::CUDA, moe::Precision::FP32)));
  EXPECT_FALSE(pads(on(moe::Device::CUDA, moe::Precision::TF32)));
  moe::LayerOptions static_shapes = on(moe::Device::CUDA, moe::Precision::BF16);
  static_shapes.static_shapes = true;
  EXPECT_FALSE(pads(static_shapes));
  {
    const ScopedEnvironment host("MOE_SINGLE_RANK_PLAN", "host");
    EXPECT_FALSE(pads(on(moe::Device::CUDA, moe::Precision::BF16)));
  }
  {
    const ScopedEnvironment packed("MOE_EXPERT_ROWS", "packed");
    EXPECT_FALSE(pads(on(moe::Device::CUDA, moe::Precision::BF16)));
  }
  const ScopedEnvironment padded("MOE_EXPERT_ROWS", "padded");
  EXPECT_TRUE(pads(on(moe::Device::CUDA, moe::Precision::FP32)));
}

// The plan in one cooperative kernel (MOE_PLAN_IN_ONE_KERNEL=1) plans the same rows as a
// kernel per step, so a layer's forward, its statistics and its backward are the same
// bits: bf16 padded to the most (the default), float32 packed, and static shapes, whose
// forward_async is also recorded as a CUDA graph and replayed.
TEST_F(CudaLayer, ThePlanInOneKernelGivesTheSameBits) {
  auto memory = moe::kernels::make_cuda_ops(0, moe::kernels::GemmPrecision::FP32);
  struct Case { const char* name; moe::Precision precision; bool static_shapes; };
  for (const Case c : {Case{"bf16, padded to the most", moe::Precision::BF16, false},
                       Case{"fp32, packed", moe::Precision::FP32, false},
                       Case{"bf16, static shapes", moe::Precision::BF16, true}}) {
    SCOPED_TRACE(c.name);
    moe::LayerOptions options = on(moe::Device::CUDA, c.precision);
    options.static_shapes = c.static_shapes;
    struct Run {
      moe::ForwardResult forward;
      Tensor<float> dx;
      std::vector<float> replayed;
    };
    auto run = [&](bool one_kernel) {
      const ScopedEnvironment launch("MOE_PLAN_IN_ONE_KERNEL", one_kernel ? "1" : "0");
      moe::MoELayer layer(config, *comm, 7, options);
      Run r{layer.forward(x, moe::Pass::Training), Tensor<float>(), {}};
      r.dx = layer.backward(grad);
      if (c.static_shapes) {
        const std::int64_t T = 200, n = T * config.hidden_dim;
        moe::Buffer<float> input(*memory), output(*memory);
        input.upload(x.data(), static_cast<std::size_t>(n));
        output.resize(static_cast<std::size_t>(n));
        memory->synchronize();  // the layer reads on its own stream
        moe::ForwardGraph graph = layer.capture_forward(input.data(), T, output.data());
        graph.replay();
        layer.synchronize();
        r.replayed = output.download();
      }
      return r;
    };
    const Run steps = run(false), one = run(true);
    EXPECT_TRUE(std::equal(one.forward.output.begin(), one.forward.output.end(), steps.forward.output.begin()));
    EXPECT_EQ(one.forward.stats.tokens_per_expert, steps.forward.stats.tokens_per_expert);
    EXPECT_EQ(one.forward.stats.dropped, steps.forward.stats.dropped);
    EXPECT_TRUE(std::equal(one.dx.begin(), one.dx.end(), steps.dx.begin()));
    EXPECT_EQ(one.replayed, steps.replayed);
  }
}

// Speculated rows on the GPU (MOE_SPECULATIVE_ROWS=1, docs/design.md §4b): the bf16
// padded layer queues its experts for guessed rows before the routing's wait, and
// reruns them on the packed rows when the guess misses (here a batch of one token
// repeated, which leaves experts empty). Each training forward and backward against
// the CPU's layer within bf16's 3e-2; both a hit and a miss happen. GELU experts, not
// ReLU: ReLU's gradient is a step, and the pre-activations bf16 moves across zero put
// dx 8.6% and 11% off at these 2 000 tokens on an H200 (2026-11-28), the same figure for
// a batch's first forward (no guess) as for its second (a guess held); see
// Bf16TrainingStepMatchesTheCpuWithinBf16Tolerance.
TEST_F(CudaLayer, SpeculatedRowsMatchTheCpuWhetherTheGuessHoldsOrNot) {
  const std::int64_t T = 2000, H = config.hidden_dim, E = config.num_experts;
  MOEConfig dropless = config;
  dropless.drop_tokens = false;
  dropless.activation = moe::Activation::GELU;
  // Loads near the mean, so that the padded layout pads.
  const Tensor<float> gate = moe::testing::gate_of_equal_columns(H, E, 0.1, 6);
  moe::MoELayer cpu(dropless, *comm, 7, on(moe::Device::CPU));
  const ScopedEnvironment speculate("MOE_SPECULATIVE_ROWS", "1");
  moe::MoELayer gpu(dropless, *comm, 7, on(moe::Device::CUDA, moe::Precision::BF16));
  cpu.set_gate_weights(gate), gpu.set_gate_weights(gate);
  const Tensor<float> a = moe::testing::random_tensor({T, H}, 1.0, 8), b = moe::testing::random_tensor({T, H}, 1.0, 9);
  Tensor<float> repeated({T, H});
  for (std::int64_t t = 0; t < T; ++t) std::copy(a.begin(), a.begin() + H, repeated.begin() + t * H);
  for (const Tensor<float>* x : std::initializer_list<const Tensor<float>*>{&a, &a, &repeated, &b, &b}) {
    const Tensor<float> g = moe::testing::random_tensor({T, H}, 1.0, 10);
    const moe::ForwardResult want = cpu.forward(*x, moe::Pass::Training), got = gpu.forward(*x, moe::Pass::Training);
    EXPECT_LE(relative_error(got.output.data(), want.output.data(), x->numel()), 3e-2);
    EXPECT_EQ(got.stats.tokens_per_expert, want.stats.tokens_per_expert);
    const Tensor<float> dx_cpu = cpu.backward(g), dx_gpu = gpu.backward(g);
    EXPECT_LE(relative_error(dx_gpu.data(), dx_cpu.data(), x->numel()), 3e-2);
  }
  const auto speculation = moe::detail::LayerAccess::speculation(gpu);
  EXPECT_GE(speculation.hits, 1);
  EXPECT_GE(speculation.misses, 1);
}

// A captured forward (a CUDA graph of forward_async) replays the forward: for new input
// values in the same memory its output is the eager forward's, with an eager forward
// run between replays (which rewrites the shared scratch); after a parameter write it
// reads the new values (bf16 copies refreshed); once the layer has freed memory, a
// replay is refused. In bf16 also with the first product's ReLU and bias in cuBLASLt's
// epilogue (MOE_GEMM_EPILOGUE=1, the experts here being ReLU ffn): its probe runs when
// the layer's ops are made, so the graph, recorded before any eager forward, takes the
// path the eager forwards take (probed at a first forward, the recording kept the
// kernel and the eager forwards took the epilogue, its bias rounded to bf16).
TEST_F(CudaLayer, ACapturedForwardReplaysTheForward) {
  auto memory = moe::kernels::make_cuda_ops(0, moe::kernels::GemmPrecision::FP32);
  const std::int64_t T = 64, H = config.hidden_dim, n = T * H;
  // A static-shape layer and the device rows it is recorded on (input zeroed).
  struct Recorded {
    moe::MoELayer layer;
    moe::Buffer<float> input, output;
    moe::ForwardGraph graph;
  };
  auto record = [&](moe::Precision p) {
    moe::LayerOptions options = on(moe::Device::CUDA, p);
    options.static_shapes = true;
    auto r = std::make_unique<Recorded>(Recorded{moe::MoELayer(config, *comm, 7, options), moe::Buffer<float>(*memory),
                                                 moe::Buffer<float>(*memory), moe::ForwardGraph()});
    r->input.resize(static_cast<std::size_t>(n));
    r->input.zero();
    r->output.resize(static_cast<std::size_t>(n));
    memory->synchronize();  // the layer reads on its own stream
    r->graph = r->layer.capture_forward(r->input.data(), T, r->output.data());
    return r;
  };
  struct Case {
    moe::Precision precision;
    const char* epilogue;  // MOE_GEMM_EPILOGUE while the layer is made ("": unset)
  };
  for (const Case c : {Case{moe::Precision::FP32, ""}, Case{moe::Precision::BF16, ""},
                       Case{moe::Precision::BF16, "1"}}) {
    SCOPED_TRACE(::testing::Message() << moe::precision_name(c.precision)
                                      << (*c.epilogue ? ", cuBLASLt's epilogue" : ""));
    const auto r = [&] {
      const ScopedEnvironment epilogue("MOE_GEMM_EPILOGUE", c.epilogue);
      return record(c.precision);
    }();
    for (int round = 0; round < 3; ++round) {
      const Tensor<float> x = moe::testing::random_tensor({T, H}, 1.0, 20 + round);
      if (round == 2)
        r->layer.set_expert_params(3, moe::testing::random_tensor({config.expert_param_count()}, 0.05, 30));
      r->input.upload(x.data(), static_cast<std::size_t>(n));
      memory->synchronize();
      r->graph.replay();
      r->layer.synchronize();
      const std::vector<float> got = r->output.download();
      const moe::ForwardResult want = r->layer.forward(x);
      EXPECT_LE(relative_error(got.data(), want.output.data(), n), 1e-6) << "round " << round;
    }
    r->layer.forward(moe::testing::random_tensor({16 * T, H}, 1.0, 40));  // more tokens: buffers move
    EXPECT_MOE_ERROR(r->graph.replay(), "freed memory since the capture", "capture again");
  }
  // A graph that outlives its layer refuses to replay.
  moe::ForwardGraph orphan = std::move(record(moe::Precision::FP32)->graph);
  EXPECT_MOE_ERROR(orphan.replay(), "the layer that recorded the graph has been destroyed");
}

// A dropless bf16 layer's forward_async waits for nothing: its products read each
// expert's rows from the plan's offsets on the GPU (resident_gemm.cuh), so a CUDA graph
// records it without static shapes, dropping no token and reading only the chosen
// experts' weights. Its output is the eager forward's within bf16's tolerance (the
// products are not cuBLAS's); the graph replayed on new inputs (new routing: other
// experts, other row counts) follows them. From a decoding step's token to past a
// 64-row tile; ffn, and glu with group-limited sigmoid routing and a shared expert.
// In float32 it is an error naming the precision.
TEST_F(CudaLayer, DroplessForwardAsyncWaitsForNothingAndReplaysAsAGraph) {
  auto memory = moe::kernels::make_cuda_ops(0, moe::kernels::GemmPrecision::FP32);
  MOEConfig ffn = config;
  ffn.drop_tokens = false;
  MOEConfig glu{16, 4, 64, 96, 1.0f};
  glu.expert_kind = moe::ExpertKind::GLU;
  glu.activation = moe::Activation::SiLU;
  glu.router = moe::RouterKind::Sigmoid;
  glu.n_group = 4;
  glu.topk_group = 2;
  glu.shared_expert_dim = 64;
  glu.drop_tokens = false;
  for (const MOEConfig& c : {ffn, glu})
    for (const std::int64_t T : {1, 5, 200}) {
      SCOPED_TRACE(::testing::Message() << c.to_string() << " T=" << T);
      const std::int64_t H = c.hidden_dim, n = T * H;
      moe::LayerOptions options = on(moe::Device::CUDA, moe::Precision::BF16);
      options.z_loss_coef = 0.0f;  // the sigmoid router has none
      moe::MoELayer layer(c, *comm, 7, options);
      moe::Buffer<float> input(*memory), output(*memory);
      input.resize(static_cast<std::size_t>(n));
      output.resize(static_cast<std::size_t>(n));
      auto forward_of = [&](const Tensor<float>& x, bool replay, moe::ForwardGraph* graph) {
        input.upload(x.data(), static_cast<std::size_t>(n));
        memory->synchronize();  // the layer reads on its own stream
        if (replay)
          graph->replay();
        else
          layer.forward_async(input.data(), T, output.data());
        layer.synchronize();
        return output.download();
      };
      const Tensor<float> x0 = moe::testing::random_tensor({T, H}, 1.0, 50 + T);
      const std::vector<float> eager_async = forward_of(x0, false, nullptr);
      EXPECT_LE(relative_error(eager_async.data(), layer.forward(x0).output.data(), n), 3e-2);
      moe::ForwardGraph graph = layer.capture_forward(input.data(), T, output.data());
      for (int round = 0; round < 3; ++round) {
        const Tensor<float> x = moe::testing::random_tensor({T, H}, 1.0, 60 + round);
        const std::vector<float> got = forward_of(x, true, &graph);
        EXPECT_LE(relative_error(got.data(), layer.forward(x).output.data(), n), 3e-2) << "round " << round;
      }
    }
  moe::MoELayer fp32(ffn, *comm, 7, on(moe::Device::CUDA));
  moe::Buffer<float> rows(*memory);
  rows.resize(4 * 64);
  EXPECT_MOE_ERROR(fp32.forward_async(rows.data(), 4, rows.data()), "MoELayer::forward_async",
                   "options.precision = fp32 on cuda", "expected bf16");
}

// Graphs for several token counts (a decoder's batch sizes), captured from the largest
// down, stay valid together: every buffer of a static-shape forward grows with the
// token count alone, the split-K partials included (sized once for any split). H = 1024
// so that the router's logits [T, 256] split over K (2 slices of 512) wherever their
// 128 × 64 tiles leave the GPU unfilled; 4 300 tokens make 136 tiles, which fill an
// H100's or H200's 132 multiprocessors and do not split. Small experts (F = 16) keep
// the test short under compute-sanitizer.
TEST_F(CudaLayer, GraphsCapturedFromTheLargestTokenCountDownStayValid) {
  auto memory = moe::kernels::make_cuda_ops(0, moe::kernels::GemmPrecision::FP32);
  const MOEConfig c{256, 2, 1024, 16, 1.25f};
  const std::int64_t H = c.hidden_dim;
  moe::LayerOptions options = on(moe::Device::CUDA);
  options.static_shapes = true;
  moe::MoELayer layer(c, *comm, 7, options);
  const std::vector<std::int64_t> counts = {4300, 1024, 64, 1};
  std::vector<moe::Buffer<float>> inputs, outputs;
  std::vector<moe::ForwardGraph> graphs;
  for (const std::int64_t T : counts) {
    inputs.emplace_back(*memory), outputs.emplace_back(*memory);
    inputs.back().resize(static_cast<std::size_t>(T * H));
    inputs.back().zero();
    outputs.back().resize(static_cast<std::size_t>(T * H));
    memory->synchronize();
    graphs.push_back(layer.capture_forward(inputs.back().data(), T, outputs.back().data()));
  }
  // Every graph replayed before any eager forward, then each output against the eager one.
  std::vector<Tensor<float>> xs;
  std::vector<std::vector<float>> got;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    xs.push_back(moe::testing::random_tensor({counts[i], H}, 1.0, 50 + static_cast<std::uint64_t>(i)));
    inputs[i].upload(xs[i].data(), static_cast<std::size_t>(counts[i] * H));
    memory->synchronize();
    graphs[i].replay();
    layer.synchronize();
    got.push_back(outputs[i].download());
  }
  for (std::size_t i = 0; i < counts.size(); ++i) {
    const moe::ForwardResult want = layer.forward(xs[i]);
    EXPECT_LE(relative_error(got[i].data(), want.output.data(), counts[i] * H), 1e-6) << counts[i] << " tokens";
  }
}

TEST_F(CudaLayer, Bf16TrainingStepMatchesTheCpuWithinBf16Tolerance) {
  // Mixed precision: bf16 expert products forward and backward, float32 results,
  // gradients and optimizer state. Normwise relative error against the CPU's float32
  // layer within 3e-2 (bf16 keeps 8 significant bits) for every gradient, and for the
  // float32 weights' update by one SGD step (linear in the gradients).
  // - Smooth activations (GELU, SiLU): ReLU's gradient is a step, so the few
  //   pre-activations that bf16 moves across zero flip whole gradient entries, and its
  //   normwise error grows like the square root of bf16's rounding (2-7% measured on an
  //   H200, 2% in a float64 simulation): no bug, and no test of one.
  // - One step: after an update the two layers' router weights differ by the gradients'
  //   bf16 error times the learning rate, and a token whose top-k then differs changes
  //   its gradients wholesale (0.05-0.37 seen on an H200 after an SGD step at lr 0.05).
  //   AdamW is no better for a comparison: its first steps move every weight by about
  //   ±lr whatever the gradient's size.
  // Each layout: the default (padded, batched) and packed.
  for (const bool glu : {false, true})
    for (const char* rows : {"", "packed"}) {
      SCOPED_TRACE(*rows ? "packed" : "default layout");
      const ScopedEnvironment layout("MOE_EXPERT_ROWS", rows);
      MOEConfig c = config;
      c.activation = glu ? moe::Activation::SiLU : moe::Activation::GELU;
      if (glu) c.expert_kind = moe::ExpertKind::GLU;
      moe::MoELayer cpu(c, *comm, 7, on(moe::Device::CPU));
      moe::MoELayer gpu(c, *comm, 7, on(moe::Device::CUDA, moe::Precision::BF16));
      const moe::SGDOptions sgd{0.05f, 0.9f, 0.0f};
      moe::Optimizer cpu_opt = moe::Optimizer::sgd(cpu, sgd), gpu_opt = moe::Optimizer::sgd(gpu, sgd);
      const Tensor<float> before = cpu.expert_params(3);
      for (moe::MoELayer* l : {&cpu, &gpu}) l->zero_grad(), l->forward(x, moe::Pass::Training);
      const Tensor<float> dx_cpu = cpu.backward(grad), dx_gpu = gpu.backward(grad);
      EXPECT_LE(relative_error(dx_gpu.data(), dx_cpu.data(), x.numel()), 3e-2) << "input gradient, glu " << glu;
      const Tensor<float> g_cpu = cpu.gate_grad(), g_gpu = gpu.gate_grad();
      EXPECT_LE(relative_error(g_gpu.data(), g_cpu.data(), g_cpu.numel()), 3e-2) << "gate gradient, glu " << glu;
      for (std::int64_t e = 0; e < c.num_experts; ++e) {
        const Tensor<float> a = cpu.expert_grad(e), b = gpu.expert_grad(e);
        EXPECT_LE(relative_error(b.data(), a.data(), a.numel()), 3e-2) << "expert " << e << ", glu " << glu;
      }
      cpu_opt.step();
      gpu_opt.step();
      const Tensor<float> a = cpu.expert_params(3), b = gpu.expert_params(3);
      std::vector<float> update_cpu(a.numel()), update_gpu(a.numel());
      for (std::int64_t i = 0; i < a.numel(); ++i) update_cpu[i] = a[i] - before[i], update_gpu[i] = b[i] - before[i];
      EXPECT_LE(relative_error(update_gpu.data(), update_cpu.data(), a.numel()), 3e-2)
          << "an SGD update of expert 3's float32 weights, glu " << glu;
      }
}

TEST_F(CudaLayer, CheckpointsMoveBetweenGpuAndCpu) {
  const std::string path = std::filesystem::temp_directory_path() / ("moe-gpu-" + std::to_string(::getpid()) + ".h5");
  moe::MoELayer gpu(config, *comm, 9, on(moe::Device::CUDA));
  moe::Optimizer opt = moe::Optimizer::adamw(gpu);
  gpu.forward(x, moe::Pass::Training);
  gpu.backward(grad);
  opt.step();
  moe::save_checkpoint(path, gpu, 1, &opt);
  moe::MoELayer cpu(config, *comm, 1, on(moe::Device::CPU));
  moe::Optimizer cpu_opt = moe::Optimizer::adamw(cpu);
  EXPECT_EQ(moe::load_checkpoint(path, cpu, &cpu_opt), 1);
  for (std::int64_t e = 0; e < 8; ++e) {
    const Tensor<float> a = gpu.expert_params(e), b = cpu.expert_params(e);
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin())) << "expert " << e;
  }
  moe::MoELayer gpu2(config, *comm, 2, on(moe::Device::CUDA));
  EXPECT_EQ(moe::load_checkpoint(path, gpu2), 1);
  const Tensor<float> a = gpu.gate_weights(), b = gpu2.gate_weights();
  EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin()));
  std::filesystem::remove(path);
}

// The architectures of docs/design.md §1b on the GPU: glu experts (one GEMM of width
// 2F, then the fused act ⊙ up), the sigmoid router with bias, groups and scaling, and
// the gated shared expert, against the CPU layer — forward in every precision,
// backward, AdamW steps with the expert-bias update, and a checkpoint round trip.
TEST_F(CudaLayer, GluSigmoidAndSharedExpertMatchTheCpu) {
  MOEConfig c(8, 3, 64, 96, 1.0f);
  c.expert_kind = moe::ExpertKind::GLU;
  c.expert_bias = false;
  c.activation = moe::Activation::SiLU;
  c.router = moe::RouterKind::Sigmoid;
  c.n_group = 4, c.topk_group = 2, c.routed_scaling_factor = 2.5f;
  c.shared_expert_dim = 80, c.shared_gate = true;
  c.bias_update_rate = 1e-2f;
  auto options = [&](moe::Device d, moe::Precision p = moe::Precision::FP32) {
    moe::LayerOptions o = on(d, p);
    o.z_loss_coef = 0.0f;  // the sigmoid router has no z-loss
    return o;
  };
  moe::MoELayer cpu(c, *comm, 7, options(moe::Device::CPU));
  const moe::ForwardResult expected = cpu.forward(x);
  for (auto p : {moe::Precision::FP32, moe::Precision::TF32, moe::Precision::BF16}) {
    moe::MoELayer gpu(c, *comm, 7, options(moe::Device::CUDA, p));
    const moe::ForwardResult got = gpu.forward(x);
    const double tol = p == moe::Precision::FP32 ? 1e-5 : p == moe::Precision::TF32 ? 5e-3 : 3e-2;
    EXPECT_LE(relative_error(got.output.data(), expected.output.data(), x.numel()), tol) << moe::precision_name(p);
    if (p == moe::Precision::FP32)
      EXPECT_TRUE(std::equal(got.expert_indices.begin(), got.expert_indices.end(), expected.expert_indices.begin()));
  }
  moe::MoELayer gpu(c, *comm, 7, options(moe::Device::CUDA));
  moe::Optimizer cpu_opt = moe::Optimizer::adamw(cpu), gpu_opt = moe::Optimizer::adamw(gpu);
  for (int step = 0; step < 3; ++step) {
    for (moe::MoELayer* l : {&cpu, &gpu}) l->zero_grad(), l->forward(x, moe::Pass::Training);
    const Tensor<float> dx_cpu = cpu.backward(grad), dx_gpu = gpu.backward(grad);
    EXPECT_LE(relative_error(dx_gpu.data(), dx_cpu.data(), x.numel()), 1e-5) << "input gradient, step " << step;
    for (std::int64_t e = 0; e < 8; ++e) {
      const Tensor<float> a = cpu.expert_grad(e), b = gpu.expert_grad(e);
      EXPECT_LE(relative_error(b.data(), a.data(), a.numel()), 1e-5) << "expert " << e;
    }
    const Tensor<float> sa = cpu.shared_expert_grad(), sb = gpu.shared_expert_grad();
    EXPECT_LE(relative_error(sb.data(), sa.data(), sa.numel()), 1e-5) << "shared expert";
    const Tensor<float> ga = cpu.shared_gate_grad(), gb = gpu.shared_gate_grad();
    EXPECT_LE(relative_error(gb.data(), ga.data(), ga.numel()), 1e-5) << "shared gate";
    cpu_opt.step();
    gpu_opt.step();
  }
  const Tensor<float> ba = cpu.expert_bias(), bb = gpu.expert_bias();
  EXPECT_TRUE(std::equal(ba.begin(), ba.end(), bb.begin())) << "expert bias after three updates";
  const std::string path = std::filesystem::temp_directory_path() / ("moe-gpu-arch-" + std::to_string(::getpid()) + ".h5");
  moe::save_checkpoint(path, gpu, 3, &gpu_opt);
  moe::MoELayer back(c, *comm, 1, options(moe::Device::CPU));
  EXPECT_EQ(moe::load_checkpoint(path, back), 3);
  const Tensor<float> y_gpu = gpu.forward(x).output, y_back = back.forward(x).output;
  EXPECT_LE(relative_error(y_back.data(), y_gpu.data(), x.numel()), 1e-5) << "GPU checkpoint read on the CPU";
  std::filesystem::remove(path);
}

// LayerOptions::high_priority: the layer's streams, its main stream and every GEMM
// lane's (GemmLanes::priority checks that they agree), take the device's greatest
// priority, lower than the default's 0 as CUDA counts (it reports a range of priorities
// on every GPU since compute capability 3.5). A training forward and backward in fp32
// and bf16 give the same bits as at the default priority, with a second layer at the
// default priority running its forward beside it on a thread (and a communicator) of its
// own, as moe train's teacher labels ahead beside the student.
TEST_F(CudaLayer, HighPriorityStreamsComputeTheSameBits) {
  using moe::kernels::GemmPrecision;
  EXPECT_EQ(moe::kernels::make_cuda_ops(0, GemmPrecision::BF16)->stream_priority(), 0);
  EXPECT_LT(moe::kernels::make_cuda_ops(0, GemmPrecision::BF16, true)->stream_priority(), 0);
  for (auto p : {moe::Precision::FP32, moe::Precision::BF16}) {
    SCOPED_TRACE(moe::precision_name(p));
    auto run = [&](bool high_priority) {
      moe::LayerOptions options = on(moe::Device::CUDA, p);
      options.high_priority = high_priority;
      const std::unique_ptr<moe::Communicator> own = moe::make_communicator(moe::CommBackend::Local);
      moe::MoELayer layer(config, *comm, 7, options), beside(config, *own, 8, on(moe::Device::CUDA, p));
      std::future<moe::ForwardResult> other = std::async(std::launch::async, [&] { return beside.forward(x); });
      std::pair<moe::ForwardResult, Tensor<float>> r{layer.forward(x, moe::Pass::Training), Tensor<float>()};
      r.second = layer.backward(grad);
      other.get();
      return r;
    };
    const auto high = run(true), normal = run(false);
    EXPECT_TRUE(std::equal(high.first.output.begin(), high.first.output.end(), normal.first.output.begin()));
    EXPECT_EQ(high.first.stats.tokens_per_expert, normal.first.stats.tokens_per_expert);
    EXPECT_TRUE(std::equal(high.second.begin(), high.second.end(), normal.second.begin()));
  }
}

TEST(CudaLayerWithoutGpu, AskingForCudaWithoutOneIsAClearError) {
  if (moe::cuda_device_count() > 0) GTEST_SKIP() << "a GPU is present";
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::LayerOptions o;
  o.device = moe::Device::CUDA;
  EXPECT_MOE_ERROR(moe::MoELayer(MOEConfig(4, 2, 8, 8), *comm, 1, o), "options.device = cuda but");
  o.device = moe::Device::CPU;
  o.precision = moe::Precision::BF16;
  EXPECT_MOE_ERROR(moe::MoELayer(MOEConfig(4, 2, 8, 8), *comm, 1, o), "options.precision = bf16 on the CPU");
}

}  // namespace
