// MoELayer: the expert-parallel forward of docs/design.md §2 out of the shared pieces — the
// router, the dispatch plan, the send layout, the expert compute and the one
// combine — with the Communicator moving rows between them.
#include "moe/layer.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>

#include "buffer.hpp"
#include "collective_check.hpp"
#include "dispatch_plan.hpp"
#include "expert_compute.hpp"
#include "expert_storage.hpp"
#include "initialization.hpp"
#include "input_checks.hpp"
#include "kernels/cpu/threads.hpp"
#include "kernels/ops.hpp"
#include "kernels/plan_steps.hpp"
#include "layer_access.hpp"
#include "moe/config_fields.hpp"
#include "parameter_set.hpp"
#include "phase_clock.hpp"
#include "router.hpp"
#include "shared_expert.hpp"
#include "single_rank_rows.hpp"
#include "token_exchange.hpp"
#include "transport.hpp"

namespace moe {
namespace {

Traffic to_traffic(TrafficMode mode) {
  return mode == TrafficMode::Deduplicated ? Traffic::Deduplicated : Traffic::PerAssignment;
}

// Fails on every rank, naming the field, when any rank's config, seed or options differ.
// The config's fields come from their one description (moe/config_fields.hpp).
void check_same_on_every_rank(Communicator& comm, const MOEConfig& c, std::uint64_t seed,
                              const LayerOptions& options, bool with_replicas) {
  std::vector<std::string> names;
  std::vector<std::int64_t> low;
  for (const ConfigField& field : config_fields()) {
    names.push_back(std::string(field.name) + (field.type == FieldType::Float ? " (bits)" : ""));
    low.push_back(field_code(field, c));
  }
  auto float_bits = [](float v) {
    std::uint32_t bits = 0;
    std::memcpy(&bits, &v, sizeof bits);
    return static_cast<std::int64_t>(bits);
  };
  for (const auto& [name, value] :
       std::vector<std::pair<const char*, std::int64_t>>{{"seed", static_cast<std::int64_t>(seed)},
                                                          {"traffic mode", static_cast<std::int64_t>(options.traffic)},
                                                          {"aux_loss_coef (bits)", float_bits(options.aux_loss_coef)},
                                                          {"z_loss_coef (bits)", float_bits(options.z_loss_coef)},
                                                          {"separate_waits", options.separate_waits ? 1 : 0},
                                                          {"static_shapes", options.static_shapes ? 1 : 0},
                                                          {"replicas (given or not)", with_replicas ? 1 : 0}}) {
    names.push_back(name);
    low.push_back(value);
  }
  std::vector<std::int64_t> high = low;
  comm.all_reduce(low.data(), static_cast<std::int64_t>(low.size()), DataType::Int64, ReduceOp::Min);
  comm.all_reduce(high.data(), static_cast<std::int64_t>(high.size()), DataType::Int64, ReduceOp::Max);
  for (std::size_t i = 0; i < low.size(); ++i) {
    MOE_CHECK_ARG(low[i] == high[i], "MoELayer", "the layer differs between ranks: ", names[i], " ranges from ",
                  low[i], " to ", high[i], " across the ", comm.size(),
                  " ranks (this rank: ", c.to_string(), ", seed ", seed,
                  "); every rank must build the layer with the same config, seed and options");
  }
}

// The ops of the device the options ask for; a GPU is picked by local rank. A problem
// is recorded in `error` (CPU ops stand in) so that every rank can agree on it before
// anyone throws.
std::unique_ptr<kernels::Ops> make_layer_ops(Communicator& comm, const LayerOptions& options, std::string& error) {
  try {
    if (options.device == Device::CPU) {
      MOE_CHECK_ARG(options.precision == Precision::FP32, "MoELayer", "options.precision = ",
                    precision_name(options.precision), " on the CPU; expected fp32 (tf32 and bf16 are GPU options)");
      return kernels::make_cpu_ops();
    }
    const int devices = kernels::cuda_device_count();
    MOE_CHECK_ARG(devices > 0, "MoELayer", "options.device = cuda but ",
                  kernels::cuda_built() ? "no CUDA device is visible" : "this moe was built without CUDA");
    return kernels::make_cuda_ops(comm.local_rank() % devices, static_cast<kernels::GemmPrecision>(options.precision),
                                  options.high_priority);
  } catch (const Error& e) {
    error = e.what();
    return kernels::make_cpu_ops();
  }
}

}  // namespace

int cuda_device_count() { return kernels::cuda_device_count(); }

const char* precision_name(Precision precision) {
  switch (precision) {
    case Precision::FP32: return "fp32";
    case Precision::TF32: return "tf32";
    case Precision::BF16: return "bf16";
  }
  return "unknown";
}

struct MoELayer::Impl {
  MOEConfig config;
  LayerOptions options;
  Communicator* comm;
  std::string device_error;  // from make_layer_ops, raised on every rank by the constructor
  std::unique_ptr<kernels::Ops> ops;
  int ranks = 1, rank = 0;
  std::int64_t local_experts = 0, first_expert = 0;

  ParameterSet params{*ops};  // gate and shared expert replicated; this rank's routed experts
  ParameterSet grads{*ops};   // the same shapes; replicated ones summed over ranks
  // One backward's replicated gradients before their sum over ranks, and with replicas
  // also its experts' gradients before their sum over the replicas.
  ParameterSet step{*ops};
  // Sigmoid router: the expert bias [E] (replicated, not trained by gradient), its
  // host copy, and the global assignment counts since the last bias update.
  Buffer<float> expert_bias{*ops};
  std::vector<float> host_expert_bias;
  std::vector<std::int64_t> load_since_update;
  RouterBuffers router{*ops};
  ExpertWorkspace workspace{*ops};
  SharedExpert shared{*ops};
  Buffer<float> saved_input{*ops};
  Buffer<float> input_rows{*ops}, output_rows{*ops}, grad_rows{*ops}, input_grad_rows{*ops};  // GPU staging
  Transport transport{*comm, *ops};
  // Data parallelism over expert groups (docs/design.md §2): the ranks holding the same
  // experts in the other groups, with whom every gradient and the bias's loads are
  // summed; null without (or with a single group).
  Communicator* replicas = nullptr;
  std::unique_ptr<Transport> replica_transport;
  std::unique_ptr<TokenExchange> exchange;  // P > 1: the tokens to their experts' owners and back
  // Held by this layer only; a ForwardGraph watches it, so that a replay after the
  // layer is gone is an error instead of a use of freed memory.
  std::shared_ptr<const bool> alive = std::make_shared<const bool>(true);

  // What a training forward keeps for backward (host side; the activations stay in
  // the workspaces above).
  struct Saved {
    bool valid = false;
    std::vector<std::int64_t> input_shape;
    std::int64_t tokens = 0;
    Routing routing;
    ExpertAssignments work;  // P = 1, the host plan's assignments and grouping (their memory reused)
    ExpertGrouping grouping;
    ExpertRows expert_rows;  // the plan the experts ran, in the workspace
  } saved;
  PhaseTimes backward_times;
  float aux_loss_weight = 0, z_loss_weight = 0;  // what backward applies; options' until set

  // with_replicas: whether MoELayer's constructor with replicas builds it, which every
  // rank of the group must agree on (a rank built without them would skip their sums).
  Impl(const MOEConfig& c, Communicator& communicator, std::uint64_t seed, LayerOptions o, bool with_replicas)
      : config(c),
        options(o),
        comm(&communicator),
        ops(make_layer_ops(communicator, o, device_error)),
        ranks(communicator.size()),
        rank(communicator.rank()),
        aux_loss_weight(o.aux_loss_coef),
        z_loss_weight(o.z_loss_coef) {
    collective_check(*comm, [&] {
      if (!device_error.empty()) throw Error(device_error);
      transport.check();
      config.validate();
      MOE_CHECK_ARG(config.num_experts % ranks == 0, "MoELayer", "num_experts = ", config.num_experts,
                    " is not divisible by the number of ranks (", ranks,
                    "); expected num_experts to be a multiple of it, so each rank owns num_experts / ranks");
      MOE_CHECK_ARG(std::isfinite(options.aux_loss_coef) && options.aux_loss_coef >= 0, "MoELayer",
                    "options.aux_loss_coef = ", options.aux_loss_coef, "; expected a finite value >= 0");
      MOE_CHECK_ARG(std::isfinite(options.z_loss_coef) && options.z_loss_coef >= 0, "MoELayer",
                    "options.z_loss_coef = ", options.z_loss_coef, "; expected a finite value >= 0");
      MOE_CHECK_ARG(options.z_loss_coef == 0 || config.router == RouterKind::Softmax, "MoELayer",
                    "options.z_loss_coef = ", options.z_loss_coef,
                    " with the sigmoid router; the router z-loss is defined on softmax logits, expected 0");
      MOE_CHECK_ARG(!options.static_shapes || config.drop_tokens, "MoELayer",
                    "options.static_shapes = true with drop_tokens = false; expected a capacity (drop_tokens = "
                    "true): the padded experts run C rows each");
      MOE_CHECK_ARG(!options.static_shapes || ranks == 1, "MoELayer", "options.static_shapes = true on ", ranks,
                    " ranks; expected one rank (the capacity-padded plan is the single-rank plan)");
      plan_where_routed_choice = plan_choice(*ops, "MOE_SINGLE_RANK_PLAN");
      exchange_plan_where_routed = plan_choice(*ops, "MOE_EXCHANGE_PLAN");
      // The padded layout comes from the plan steps, on either backend.
      const char* forced = std::getenv("MOE_SINGLE_RANK_PLAN");
      MOE_CHECK_ARG(!options.static_shapes || !forced || std::string(forced) != "host", "MoELayer",
                    "options.static_shapes = true with MOE_SINGLE_RANK_PLAN = host; expected steps or unset (the "
                    "capacity-padded plan is made by the plan steps)");
      plan_where_routed_choice = plan_where_routed_choice || options.static_shapes;
      const bool pad_to_most =
          SingleRankRows::pad_to_most_choice(ranks, options.static_shapes, forced, padded_by_default(forced));
      shared_expert_early = shared_expert_order_choice();
      const bool speculate = SingleRankRows::speculate_choice();
      single_rank_rows = SingleRankRows(config, options.static_shapes, pad_to_most, speculate);
      plan_where_routed_choice = plan_where_routed_choice || pad_to_most;
    });
    check_same_on_every_rank(*comm, config, seed, options, with_replicas);
    if (!on_device()) kernels::cpu::share_cores_among_local_ranks(comm->local_size());

    local_experts = config.num_experts / ranks;
    first_expert = rank * local_experts;
    if (ranks > 1)
      exchange = std::make_unique<TokenExchange>(*comm, *ops, transport, config.hidden_dim, local_experts,
                                                 to_traffic(options.traffic), options.separate_waits);
    // Sized before anything is allocated: a config too large for the machine is an
    // error naming the sizes, on every rank, not an allocation that kills the process.
    collective_check(*comm, [&] {
      const std::int64_t H = config.hidden_dim, E = config.num_experts;
      const double tensors = double(local_experts) * double(config.expert_param_count()) + double(H) * double(E) +
                             double(config.shared_expert_param_count()) + double(H);
      const double bytes = 3.0 * 4.0 * tensors;  // parameters, gradients, one backward's replicated gradients
      MOE_CHECK_ARG(bytes < 9.0e18, "MoELayer", "Failed to allocate memory for expert parameters: num_experts = ", E,
                    ", hidden_dim = ", H, ", expert_dim = ", config.expert_dim, " imply ", bytes, " bytes");
      if (!on_device())
        detail::check_fits_in_memory(static_cast<std::int64_t>(bytes),
                                     "expert parameters (" + std::to_string(local_experts) + " experts of " +
                                         std::to_string(config.expert_param_count()) +
                                         " values on this rank, with their gradients)");
      try {
        params.resize(config, local_experts);
        grads.resize(config, local_experts);
        step.resize(config, 0);
      } catch (const Error& e) {
        detail::fail("MoELayer", "Failed to allocate memory for expert parameters (", local_experts, " experts of ",
                     config.expert_param_count(), " values on this rank): ", e.what());
      }
    });
    // Initialised in host memory and uploaded: the buffers may be on a GPU.
    std::vector<float> host(static_cast<std::size_t>(config.hidden_dim * config.num_experts));
    init_gate_weights(host.data(), config, seed);
    params.gate.upload(host);
    host.resize(static_cast<std::size_t>(config.expert_param_count()));
    for (std::int64_t e = 0; e < local_experts; ++e) {
      init_expert_params(host.data(), config, seed, first_expert + e);
      params.experts.copy_from_flat(e, host.data());
    }
    if (config.shared_expert_dim > 0) {
      host.resize(static_cast<std::size_t>(config.shared_expert_param_count()));
      init_shared_expert_params(host.data(), config, seed);
      params.shared.copy_from_flat(0, host.data());
    }
    if (config.shared_gate) {
      host.resize(static_cast<std::size_t>(config.hidden_dim));
      init_shared_gate_weights(host.data(), config, seed);
      params.shared_gate.upload(host);
    }
    if (config.has_expert_bias_vector()) {
      host_expert_bias.assign(static_cast<std::size_t>(config.num_experts), 0.0f);
      expert_bias.upload(host_expert_bias);
      load_since_update.assign(static_cast<std::size_t>(config.num_experts), 0);
    }
    zero_grad();
  }

  void zero_grad() { grads.zero(); }

  // After every rank's constructor passed its checks (MoELayer's constructor with replicas).
  void attach_replicas(Communicator& group) {
    if (group.size() == 1) return;
    replicas = &group;
    replica_transport = std::make_unique<Transport>(group, *ops);
    step.resize(config, local_experts);
  }

  const float* bias_or_null() const { return config.has_expert_bias_vector() ? expert_bias.data() : nullptr; }
  const float* shared_gate_or_null() const { return config.shared_gate ? params.shared_gate.data() : nullptr; }

  // b += rate · sign(mean load − load) from the global counts since the last update.
  void update_expert_bias() {
    if (!config.has_expert_bias_vector() || config.bias_update_rate == 0.0f) return;
    // The loads so far are the expert group's; the replicas' groups saw other tokens.
    if (replicas)
      replicas->all_reduce(load_since_update.data(), static_cast<std::int64_t>(load_since_update.size()),
                           DataType::Int64, ReduceOp::Sum);
    moe::update_expert_bias(host_expert_bias, load_since_update, config.bias_update_rate);
    expert_bias.upload(host_expert_bias);
    std::fill(load_since_update.begin(), load_since_update.end(), 0);
  }

  bool on_device() const { return ops->backend() == kernels::Backend::CUDA; }
  // A host tensor's data where the ops can read it.
  const float* stage_in(const Tensor<FLOAT_TYPE>& t, Buffer<float>& staging) {
    return on_device() ? staging.upload(t.data(), static_cast<std::size_t>(t.numel())) : t.data();
  }
  // Where the ops write what ends up in host tensor t (copied by stage_out).
  float* stage_target(Tensor<FLOAT_TYPE>& t, Buffer<float>& staging) {
    return on_device() ? staging.resize(static_cast<std::size_t>(t.numel())) : t.data();
  }
  void stage_out(Tensor<FLOAT_TYPE>& t, const float* device) {
    if (on_device() && t.numel()) ops->copy_to_host(t.data(), device, sizeof(float) * static_cast<std::size_t>(t.numel()));
  }

  std::vector<ExpertParams> local_params() const {
    std::vector<ExpertParams> out;
    for (std::int64_t e = 0; e < local_experts; ++e) out.push_back(params.experts.params(e));
    return out;
  }

  std::vector<ExpertGradients> local_grads() {
    std::vector<ExpertGradients> out;
    for (std::int64_t e = 0; e < local_experts; ++e) out.push_back(grads.experts.grads(e));
    return out;
  }
  // Where a backward adds its experts' gradients: the layer's, or with replicas this
  // backward's own, to be summed over the replicas first.
  std::vector<ExpertGradients> backward_expert_grads() {
    if (!replicas) return local_grads();
    std::vector<ExpertGradients> out;
    for (std::int64_t e = 0; e < local_experts; ++e) out.push_back(step.experts.grads(e));
    return out;
  }

  std::int64_t local_index(std::int64_t global_id, const char* where) const {
    MOE_CHECK_ARG(global_id >= first_expert && global_id < first_expert + local_experts, where,
                  "global_id = ", global_id, " is not owned by rank ", rank, "; expected an id in [",
                  first_expert, ", ", first_expert + local_experts, ")");
    return global_id - first_expert;
  }

  // Where the dispatch plan is made: where the routing lives (the plan steps:
  // Ops::plan_single_rank on one rank, plan_send and plan_received on several) when the
  // backend plans there (a GPU) or the variable says steps; on the host when it says
  // host, or on the CPU by default. MOE_SINGLE_RANK_PLAN picks for one rank,
  // MOE_EXCHANGE_PLAN for several, so that one run can compare the two (one layer per
  // choice). Read when the layer is built (an unknown value fails there, on every rank).
  static bool plan_choice(const kernels::Ops& ops, const char* variable) {
    const char* forced = std::getenv(variable);
    if (!forced || !*forced) return ops.plans_where_routed();
    const std::string choice = forced;
    MOE_CHECK_ARG(choice == "host" || choice == "steps", "MoELayer", variable, " = '", choice,
                  "'; expected host (the host plan), steps (the plan where the routing lives) or unset");
    return choice == "steps";
  }
  bool exchange_plan_where_routed = false;  // P > 1: TokenExchange::plan_where_routed
  bool plan_where_routed_choice = false;    // P = 1: plan_where_routed below
  bool shared_expert_early = true;          // MOE_SHARED_EXPERT (below)
  // The experts' rows on one rank: packed, padded, and speculated (single_rank_rows.hpp).
  SingleRankRows single_rank_rows{config, false, false, false};

  // MOE_SHARED_EXPERT=early (the default, or unset) queues the shared expert during the
  // host's wait for the routing (compute_forward); late, after the routed experts, as
  // before, for measuring the two in one run. The output's bits are the same.
  static bool shared_expert_order_choice() {
    const char* asked = std::getenv("MOE_SHARED_EXPERT");
    if (!asked || !*asked) return true;
    const std::string choice = asked;
    MOE_CHECK_ARG(choice == "early" || choice == "late", "MoELayer", "MOE_SHARED_EXPERT = '", choice,
                  "'; expected early (during the wait for the routing), late (after the routed experts) or unset");
    return choice == "early";
  }
  // Unless MOE_EXPERT_ROWS says (SingleRankRows::pad_to_most_choice), the experts are
  // padded to the most rows kept where that was measured faster: bf16 on the GPU, one
  // rank, shapes not static, the plan steps not refused. The bf16 forward took 1.876 ms padded against 2.270
  // packed at the fine-grained config, 0.451 against 0.482 at mid, 5.788 against 5.919
  // at DeepSeek-like (H200, one run, 2026-11-27; docs/performance.md). The CPU runs each
  // expert's products in turn, where padding would only add rows.
  bool padded_by_default(const char* forced) const {
    return on_device() && options.precision == Precision::BF16 && ranks == 1 && !options.static_shapes &&
           !(forced && std::string(forced) == "host");
  }
  // The single-rank plan where the routing lives (Ops::plan_single_rank), into the
  // workspace, when chosen; false leaves the plan to the host.
  bool plan_where_routed(std::int64_t tokens, std::int64_t* host_kept_per_expert, const PlanLayout& layout) {
    if (!plan_where_routed_choice || tokens == 0) return false;
    plan_single_rank(tokens, layout, host_kept_per_expert, nullptr);
    return true;
  }
  // Ops::plan_single_rank into the workspace in `layout`; the kept counts to the host
  // and the experts' offsets to expert_offsets (backend memory) where those are not
  // null.
  void plan_single_rank(std::int64_t tokens, const PlanLayout& layout, std::int64_t* host_kept_per_expert,
                        std::int64_t* expert_offsets) {
    const std::int64_t rows_per_expert = layout.rows_per_expert;
    const std::int64_t k = config.top_k;
    // Grouped rows are int32 indices, as the T·k assignments are (checked on entry).
    MOE_CHECK_ARG(config.num_experts * rows_per_expert <= std::numeric_limits<std::int32_t>::max(), "MoELayer::forward",
                  "tokens = ", tokens, " gives num_experts · ", rows_per_expert, " padded rows (padded experts); "
                  "expected at most 2^31 - 1: pass fewer tokens per call");
    const auto n = static_cast<std::size_t>(tokens * k);
    const auto grouped = std::max(static_cast<std::size_t>(config.num_experts * rows_per_expert), n);
    const kernels::SingleRankPlan out{workspace.gather_rows.resize(grouped),
                                      workspace.combine_offsets.resize(static_cast<std::size_t>(tokens + 1)),
                                      workspace.combine_sources.resize(n),
                                      workspace.combine_weights.resize(n),
                                      workspace.entry_slot.resize(n),
                                      host_kept_per_expert,
                                      expert_offsets};
    ops->plan_single_rank(router.indices.data(), router.weights.data(), tokens, k, config.num_experts,
                          std::min(expert_capacity(config, tokens), tokens * k), rows_per_expert, layout.padding,
                          out);
  }

  ForwardResult forward(const Tensor<FLOAT_TYPE>& input, Pass pass);
  ForwardResult forward_in_place(const float* input, std::int64_t tokens, float* output, Pass pass);
  ForwardResult compute_forward(const std::vector<std::int64_t>& shape, std::int64_t tokens, const float* x,
                                float* output, Pass pass);
  void forward_async(const float* x, std::int64_t tokens, float* output);
  void backward_in_place(const float* grad_output, float* grad_input);
  void check_backward_ready(const char* where) const;
  void compute_backward(const float* grad_output, float* grad_input);
  Tensor<FLOAT_TYPE> backward(const Tensor<FLOAT_TYPE>& grad_output);
};

ForwardResult MoELayer::Impl::forward(const Tensor<FLOAT_TYPE>& input, Pass pass) {
  constexpr const char* where = "MoELayer::forward";
  std::int64_t tokens = 0;
  collective_check(*comm, [&] { tokens = checks::input_tokens(input.shape(), config, where); });
  Tensor<FLOAT_TYPE> output(input.shape());
  float* out = stage_target(output, output_rows);
  ForwardResult result = compute_forward(input.shape(), tokens, stage_in(input, input_rows), out, pass);
  stage_out(output, out);
  result.output = std::move(output);
  return result;
}

ForwardResult MoELayer::Impl::forward_in_place(const float* input, std::int64_t tokens, float* output, Pass pass) {
  constexpr const char* where = "MoELayer::forward";
  collective_check(*comm, [&] {
    MOE_CHECK_ARG(tokens >= 0 && tokens <= std::numeric_limits<std::int32_t>::max() / config.top_k, where,
                  "tokens = ", tokens, "; expected 0 <= tokens and tokens * top_k <= 2^31 - 1");
    MOE_CHECK_ARG(tokens == 0 || (input && output), where, "input or output is null for ", tokens, " tokens");
  });
  return compute_forward({tokens, config.hidden_dim}, tokens, input, output, pass);
}

// The forward on rows already in the ops' memory: x [T, H] in, output [T, H] out.
ForwardResult MoELayer::Impl::compute_forward(const std::vector<std::int64_t>& shape, std::int64_t tokens,
                                              const float* x, float* output, Pass pass) {
  const bool training = pass == Pass::Training;
  saved.valid = false;
  ForwardResult result;
  PhaseTimes& times = result.stats.times;
  PhaseClock clock(*ops);
  const auto E = static_cast<std::size_t>(config.num_experts);
  Routing routing;
  launch_routing(*ops, x, tokens, params.gate.data(), bias_or_null(), config, router);
  // On one rank the plan runs where the routing lives when the backend has it (a GPU),
  // queued before the routing's one wait, so no T·k choices go to the host first.
  std::vector<std::int64_t> kept_per_expert(E, 0);
  const std::int64_t speculated = ranks == 1 ? single_rank_rows.speculated_rows(tokens) : 0;
  const PlanLayout layout = single_rank_rows.plan_layout(tokens, speculated);
  const bool planned_where_routed = ranks == 1 && plan_where_routed(tokens, kept_per_expert.data(), layout);
  // With several ranks likewise: only the per-peer counts (and kept_per_expert) come back.
  const bool exchange_planned = ranks > 1 && exchange_plan_where_routed;
  if (exchange_planned)
    exchange->plan_where_routed(router.indices.data(), router.weights.data(), tokens, config.top_k,
                                config.num_experts, std::min(expert_capacity(config, tokens), tokens * config.top_k),
                                kept_per_expert.data());
  // Queued after the routing's downloads, the device runs these while the host waits
  // for them and plans (docs/design.md §4b), where it would otherwise sit idle through
  // that round trip:
  // - with speculated rows, the routed experts for the plan's guessed layout; if the
  //   kept counts show the guess missed (the plan packed the rows instead), they run
  //   again below on the packed rows, and the first run's output is overwritten;
  // - the shared expert, which needs no routing. Its sum into the output comes after
  //   the routed experts' combine, as before, so the output's bits are unchanged.
  const bool speculating = planned_where_routed && speculated > 0;
  const bool has_shared = config.shared_expert_dim > 0, shared_early = has_shared && shared_expert_early;
  std::function<void()> meanwhile;
  if (speculating || shared_early)
    meanwhile = [&] {
      clock.lap(times.route);
      if (speculating) {
        run_experts(*ops, single_rank_rows.rows_of_plan(tokens, nullptr, layout), x, local_params(),
                    params.experts.layout, config.activation, training, workspace, output);
        clock.lap(times.experts);
      }
      if (shared_early) {
        shared.compute(*ops, x, tokens, params.shared, shared_gate_or_null(), config.activation);
        clock.lap(times.shared_expert);
      }
    };
  finish_routing(*ops, tokens, config, router, routing, meanwhile);
  if (!meanwhile) clock.lap(times.route);
  DispatchPlan plan;  // the host plan, when the plan was not made where the routing lives
  if (!planned_where_routed && !exchange_planned) {
    plan = make_dispatch_plan(routing.indices.data(), tokens, config);
    kept_per_expert = plan.kept_per_expert;
  }
  clock.lap(times.plan);

  ForwardStats& stats = result.stats;
  stats.dropped = tokens * config.top_k;
  for (std::int64_t kept : kept_per_expert) stats.dropped -= kept;
  stats.rows_sent.assign(static_cast<std::size_t>(ranks), 0);
  stats.rows_received.assign(static_cast<std::size_t>(ranks), 0);

  if (ranks == 1) {
    // One rank owns every expert: run them on the tokens in place, nothing to send.
    if (planned_where_routed) {
      saved.expert_rows = single_rank_rows.rows_of_plan(tokens, &kept_per_expert, layout);
    } else {
      token_assignments(plan, routing.indices.data(), routing.weights.data(), saved.work);
      group_by_expert(saved.work, saved.grouping);
      saved.expert_rows = load_plan(saved.work, saved.grouping, workspace);
    }
    clock.lap(times.plan);
    // A speculated layout the plan kept (the most rows kept fit in it) ran above.
    const bool speculation_held = speculating && saved.expert_rows.padded;
    if (speculating) single_rank_rows.count_speculation(speculated, speculation_held);
    if (!speculation_held) {
      run_experts(*ops, saved.expert_rows, x, local_params(), params.experts.layout, config.activation, training,
                  workspace, output);
      clock.lap(times.experts);
    }
    single_rank_rows.remember(kept_per_expert, tokens);
  } else {
    saved.expert_rows = exchange_planned ? exchange->dispatch_planned(x, kept_per_expert, workspace, times, clock)
                                         : exchange->dispatch(x, routing, plan, workspace, times, clock);
    run_experts(*ops, saved.expert_rows, exchange->received_rows(), local_params(), params.experts.layout,
                config.activation, training, workspace, exchange->result_rows());
    clock.lap(times.experts);
    exchange->return_and_combine(tokens, output, times, clock);
    exchange->count_traffic(stats);
  }
  if (has_shared) {
    if (!shared_early) shared.compute(*ops, x, tokens, params.shared, shared_gate_or_null(), config.activation);
    shared.add_into(*ops, tokens, config.hidden_dim, output);
    clock.lap(times.shared_expert);
  }
  // The host's sums over the routing, while the device runs what is queued above (on
  // one rank: the experts, the combine, the shared expert's sum).
  routing_losses(config, routing);
  result.aux_loss = static_cast<float>(routing.aux_loss);
  result.z_loss = static_cast<float>(routing.z_loss);

  // One all-reduce for the kept and the chosen assignments per expert.
  std::vector<std::int64_t> counts = kept_per_expert;
  counts.insert(counts.end(), routing.assignments_per_expert.begin(), routing.assignments_per_expert.end());
  comm->all_reduce(counts.data(), static_cast<std::int64_t>(counts.size()), DataType::Int64, ReduceOp::Sum);
  stats.tokens_per_expert.assign(counts.begin(), counts.begin() + static_cast<std::ptrdiff_t>(E));
  stats.chosen_per_expert.assign(counts.begin() + static_cast<std::ptrdiff_t>(E), counts.end());
  if (training && config.has_expert_bias_vector())
    for (std::size_t e = 0; e < E; ++e) load_since_update[e] += stats.chosen_per_expert[e];
  clock.lap(times.reduce);
  result.expert_indices = Tensor<INT_TYPE>({tokens, config.top_k}, routing.indices);
  result.expert_weights = Tensor<FLOAT_TYPE>({tokens, config.top_k}, routing.weights);
  if (training) {
    const auto n = static_cast<std::size_t>(tokens * config.hidden_dim);
    ops->copy(saved_input.resize(n), x, sizeof(float) * n);
    saved.input_shape = shape;
    saved.tokens = tokens;
    saved.routing = std::move(routing);
    saved.valid = true;
    clock.lap(times.route);  // kept for the router's backward
  }
  clock.finish();
  return result;
}

// The forward with nothing for the host: routing, the plan and the experts queued
// where the layer computes, without a wait (docs/design.md §4b). Static shapes pad
// every expert to its capacity, so the host knows each product's shape; a dropless
// layer packs the rows, and its products read each expert's rows from the plan's
// offsets where they are (Ops::gather_expert_ffn_combine_resident).
void MoELayer::Impl::forward_async(const float* x, std::int64_t tokens, float* output) {
  constexpr const char* where = "MoELayer::forward_async";
  MOE_CHECK_ARG(options.static_shapes || !config.drop_tokens, where,
                "options.static_shapes = false with drop_tokens = true; expected static_shapes = true (experts "
                "padded to their capacity) or drop_tokens = false (dropless): packed experts with a capacity "
                "take their row counts from the routing, which the host would wait for");
  MOE_CHECK_ARG(ranks == 1, where, "called on ", ranks, " ranks; expected one rank (the exchange between ranks "
                "needs its row counts on the host)");
  MOE_CHECK_ARG(options.static_shapes || experts_resident(*ops, params.experts.layout, config.activation), where,
                "options.precision = ", precision_name(options.precision), " on ",
                on_device() ? "cuda" : "cpu", " with hidden_dim = ", config.hidden_dim, " and expert_dim = ",
                config.expert_dim, "; expected bf16 with both a multiple of 8 (the products that read their "
                "row counts on the GPU), or options.static_shapes = true");
  MOE_CHECK_ARG(tokens >= 0 && tokens <= std::numeric_limits<std::int32_t>::max() / config.top_k, where,
                "tokens = ", tokens, "; expected 0 <= tokens and tokens * top_k <= 2^31 - 1");
  MOE_CHECK_ARG(tokens == 0 || (x && output), where, "input or output is null for ", tokens, " tokens");
  saved.valid = false;
  if (tokens == 0) return;
  launch_routing(*ops, x, tokens, params.gate.data(), bias_or_null(), config, router);
  if (options.static_shapes) {
    const PlanLayout layout = single_rank_rows.plan_layout(tokens);
    plan_where_routed(tokens, nullptr, layout);  // static shapes plan where the routing lives
    run_experts(*ops, single_rank_rows.rows_of_plan(tokens, nullptr, layout), x, local_params(), params.experts.layout,
                config.activation, false, workspace, output);
  } else {
    // Dropless: all T·k assignments kept, packed by expert.
    const auto E = static_cast<std::size_t>(config.num_experts);
    plan_single_rank(tokens, PlanLayout{}, nullptr, workspace.expert_offsets.resize(E + 1));
    run_experts_resident(*ops, tokens, tokens * config.top_k, single_rank_rows.rows_bound(tokens), x, local_params(),
                         params.experts.layout, config.activation, workspace, output);
  }
  if (config.shared_expert_dim > 0)
    shared.forward(*ops, x, tokens, params.shared, shared_gate_or_null(), config.activation, output);
}

// The forward in reverse (docs/design.md §2): combine-backward, all-to-all, expert backward,
// all-to-all back, router backward — through the same layout and the same combine.
Tensor<FLOAT_TYPE> MoELayer::Impl::backward(const Tensor<FLOAT_TYPE>& grad_output) {
  constexpr const char* where = "MoELayer::backward";
  collective_check(*comm, [&] {
    check_backward_ready(where);
    MOE_CHECK_ARG(grad_output.shape() == saved.input_shape, where, "grad_output has shape ",
                  shape_to_string(grad_output.shape()), "; expected the forward input's shape ",
                  shape_to_string(saved.input_shape));
  });
  Tensor<FLOAT_TYPE> d_input(saved.input_shape);
  float* dx = stage_target(d_input, input_grad_rows);
  compute_backward(stage_in(grad_output, grad_rows), dx);
  stage_out(d_input, dx);
  return d_input;
}

void MoELayer::Impl::backward_in_place(const float* grad_output, float* grad_input) {
  constexpr const char* where = "MoELayer::backward";
  collective_check(*comm, [&] {
    check_backward_ready(where);
    MOE_CHECK_ARG(saved.tokens == 0 || (grad_output && grad_input), where, "grad_output or grad_input is null");
  });
  compute_backward(grad_output, grad_input);
}

void MoELayer::Impl::check_backward_ready(const char* where) const {
  MOE_CHECK_ARG(saved.valid, where, "no forward(input, Pass::Training) to differentiate: backward follows a "
                "training forward (an inference forward, or another layer call, discards its activations)");
}

void MoELayer::Impl::compute_backward(const float* g, float* dx) {
  const std::int64_t T = saved.tokens, k = config.top_k;
  PhaseTimes& times = backward_times;
  times = PhaseTimes{};
  PhaseClock clock(*ops);
  step.zero();
  // ∂L/∂weight of each slot (0 where dropped), in backend memory.
  float* d_slot = router.d_weights.resize(static_cast<std::size_t>(T * k));
  const auto A = static_cast<std::size_t>(saved.expert_rows.entries);
  float* d_weights = workspace.d_weights.resize(A);

  if (ranks == 1) {
    backward_experts(*ops, saved.expert_rows, g, local_params(), backward_expert_grads(), params.experts.layout,
                     config.activation, workspace, dx, d_weights);
    // The combine's entries are the kept slots: their weight gradients go to their slots.
    ops->fill_zero(d_slot, sizeof(float) * static_cast<std::size_t>(T * k));
    ops->scatter(d_weights, workspace.entry_slot.data(), static_cast<std::int64_t>(A), d_slot);
    clock.lap(times.experts);
  } else {
    exchange->dispatch_gradient(g, times, clock);
    backward_experts(*ops, saved.expert_rows, exchange->gradient_rows(), local_params(), backward_expert_grads(),
                     params.experts.layout, config.activation, workspace, exchange->input_gradient_rows(),
                     d_weights);
    clock.lap(times.experts);
    exchange->return_gradient(workspace.d_weights, T, k, dx, d_slot, times, clock);
  }
  // The replicated parameters' gradients of this rank's tokens, summed over ranks.
  moe::router_backward(*ops, saved_input.data(), params.gate.data(), config, saved.routing, d_slot,
                       aux_loss_weight, z_loss_weight, router, step.gate.data(), dx);
  clock.lap(times.route);
  if (config.shared_expert_dim > 0) {
    shared.backward(*ops, saved_input.data(), T, g, params.shared, shared_gate_or_null(), config.activation,
                    step.shared, step.shared_gate.data(), dx);
    clock.lap(times.shared_expert);
  }
  // step holds the replicated tensors, and with replicas the experts too: the tensors of
  // grads it holds, in the same order. Replicated ones are summed over the expert group,
  // then everything over the replicas: every gradient is the whole job's.
  std::vector<ParameterSet::Tensor> sums = step.tensors(), into;
  for (const ParameterSet::Tensor& t : grads.tensors())
    if (t.replicated || replicas) into.push_back(t);
  for (std::size_t i = 0; i < sums.size(); ++i) {
    if (sums[i].replicated) transport.all_reduce_sum(sums[i].data, sums[i].count);
    if (replicas) replica_transport->all_reduce_sum(sums[i].data, sums[i].count);
    ops->add(into[i].data, sums[i].data, sums[i].count);
  }
  clock.lap(times.reduce);
  clock.finish();
  saved.valid = false;  // activations are used once
}

MoELayer::MoELayer(const MOEConfig& config, Communicator& comm, std::uint64_t seed, LayerOptions options)
    : impl_(std::make_unique<Impl>(config, comm, seed, options, false)) {}

// Every group builds its layer and checks it over its own ranks; then the replicas check
// that they hold the same layer at the same position of their groups. A failure
// anywhere reaches every rank (over the replicas, then the groups, then the replicas:
// in a grid of groups that is everyone), so no group is left waiting in a later sum.
MoELayer::MoELayer(const MOEConfig& config, Communicator& experts, Communicator& replicas, std::uint64_t seed,
                   LayerOptions options) {
  std::string error;
  auto record = [&](const std::function<void()>& step) {
    try {
      step();
    } catch (const Error& e) {
      if (error.empty()) error = e.what();
    }
  };
  auto agree = [&](Communicator& over) { record([&] { share_error(over, error); }); };
  record([&] { impl_ = std::make_unique<Impl>(config, experts, seed, options, true); });
  // The constructor's checks fail the whole group alike, so a group whose layer failed
  // skips the agreement among its own ranks below: one of them may have been built
  // without replicas (that check failed) and has left.
  const bool built = impl_ != nullptr;
  agree(replicas);
  if (error.empty())
    record([&] {
      std::int64_t position[2] = {experts.size(), experts.rank()}, low[2] = {position[0], position[1]};
      replicas.all_reduce(position, 2, DataType::Int64, ReduceOp::Max);
      replicas.all_reduce(low, 2, DataType::Int64, ReduceOp::Min);
      MOE_CHECK_ARG(low[0] == position[0] && low[1] == position[1], "MoELayer",
                    "the replicas communicator joins ranks of expert groups of ", low[0], " to ", position[0],
                    " ranks, at positions ", low[1], " to ", position[1], " of their groups (this rank: ",
                    experts.rank(), " of ", experts.size(),
                    "); expected the ranks at the same position of equal groups (split_expert_parallel)");
      check_same_on_every_rank(replicas, config, seed, options, true);
      Transport(replicas, *impl_->ops).check();
    });
  if (built) agree(experts);
  agree(replicas);
  if (!error.empty()) throw CollectiveError(error);
  impl_->attach_replicas(replicas);
}
MoELayer::~MoELayer() = default;
MoELayer::MoELayer(MoELayer&&) noexcept = default;
MoELayer& MoELayer::operator=(MoELayer&&) noexcept = default;

ForwardResult MoELayer::forward(const Tensor<FLOAT_TYPE>& input, Pass pass) { return impl_->forward(input, pass); }
Tensor<FLOAT_TYPE> MoELayer::backward(const Tensor<FLOAT_TYPE>& grad_output) { return impl_->backward(grad_output); }
ForwardResult MoELayer::forward(const float* input, std::int64_t tokens, float* output, Pass pass) {
  return impl_->forward_in_place(input, tokens, output, pass);
}
void MoELayer::backward(const float* grad_output, float* grad_input) { impl_->backward_in_place(grad_output, grad_input); }
void MoELayer::forward_async(const float* input, std::int64_t tokens, float* output) {
  impl_->forward_async(input, tokens, output);
}
void MoELayer::synchronize() { impl_->ops->synchronize(); }

struct ForwardGraph::State {
  kernels::Ops* ops;  // the recording layer's, valid while `layer` has not expired
  std::weak_ptr<const bool> layer;
  std::unique_ptr<kernels::CapturedWork> work;
  std::uint64_t memory_epoch;  // the ops' frees when recorded
};
ForwardGraph::ForwardGraph() = default;
ForwardGraph::~ForwardGraph() = default;
ForwardGraph::ForwardGraph(ForwardGraph&&) noexcept = default;
ForwardGraph& ForwardGraph::operator=(ForwardGraph&&) noexcept = default;

void ForwardGraph::replay() {
  constexpr const char* where = "ForwardGraph::replay";
  MOE_CHECK_ARG(state_, where, "an empty graph; expected one from MoELayer::capture_forward");
  MOE_CHECK_ARG(!state_->layer.expired(), where, "the layer that recorded the graph has been destroyed");
  MOE_CHECK_ARG(state_->ops->memory_epoch() == state_->memory_epoch, where,
                "the layer has freed memory since the capture (a call with more tokens moved its buffers); "
                "capture again, and capture the largest token count first: each call sizes the buffers for its "
                "tokens, so graphs recorded after the largest stay valid");
  state_->ops->replay(*state_->work);
}

ForwardGraph MoELayer::capture_forward(const float* input, std::int64_t tokens, float* output) {
  constexpr const char* where = "MoELayer::capture_forward";
  Impl& m = *impl_;
  MOE_CHECK_ARG(m.on_device(), where, "options.device = cpu; expected cuda (CUDA graphs record GPU work)");
  MOE_CHECK_ARG(tokens > 0, where, "tokens = ", tokens, "; expected at least one token to record");
  // Once unrecorded: the buffers reach their size and the bf16 copies are made, so the
  // recording allocates and converts nothing.
  m.forward_async(input, tokens, output);
  m.ops->begin_capture();
  ForwardGraph graph;
  try {
    m.forward_async(input, tokens, output);
    graph.state_ =
        std::make_unique<ForwardGraph::State>(ForwardGraph::State{m.ops.get(), m.alive, m.ops->end_capture(), 0});
  } catch (...) {
    m.ops->abort_capture();
    throw;
  }
  graph.state_->memory_epoch = m.ops->memory_epoch();
  return graph;
}
const PhaseTimes& MoELayer::backward_times() const { return impl_->backward_times; }
void MoELayer::set_loss_weights(float aux_loss_weight, float z_loss_weight) {
  constexpr const char* where = "MoELayer::set_loss_weights";
  MOE_CHECK_ARG(std::isfinite(aux_loss_weight), where, "aux_loss_weight = ", aux_loss_weight,
                "; expected a finite value");
  MOE_CHECK_ARG(std::isfinite(z_loss_weight), where, "z_loss_weight = ", z_loss_weight, "; expected a finite value");
  MOE_CHECK_ARG(z_loss_weight == 0 || impl_->config.router == RouterKind::Softmax, where,
                "z_loss_weight = ", z_loss_weight,
                " with the sigmoid router; the router z-loss is defined on softmax logits, expected 0");
  impl_->aux_loss_weight = aux_loss_weight;
  impl_->z_loss_weight = z_loss_weight;
}
void MoELayer::zero_grad() { impl_->zero_grad(); }
void MoELayer::parameters_written() {
  for (const ParameterSet::Tensor& t : impl_->params.tensors())
    impl_->ops->written_elsewhere(t.data, sizeof(float) * static_cast<std::size_t>(t.count));
}

std::vector<ParameterView> MoELayer::parameter_views() {
  Impl& m = *impl_;
  const std::int64_t H = m.config.hidden_dim;
  std::vector<ParameterView> out;
  out.push_back({"gate.weight", {H, m.config.num_experts}, m.params.gate.data(), m.grads.gate.data(), true});
  auto add_experts = [&](const char* prefix, ExpertStorage& p, ExpertStorage& g, bool stacked, bool replicated) {
    for (std::size_t i = 0; i < p.tensor_count(); ++i) {
      const ExpertTensorSpec& t = p.layout.tensors[i];
      std::vector<std::int64_t> shape;
      if (stacked) shape.push_back(p.experts);
      if (t.rows > 1 || (t.id != kBiasIn && t.id != kBiasOut)) shape.push_back(t.rows);
      shape.push_back(t.cols);
      out.push_back({std::string(prefix) + t.name, shape, p.tensor(i), g.tensor(i), replicated});
    }
  };
  add_experts("experts.", m.params.experts, m.grads.experts, true, false);
  if (m.config.shared_expert_dim > 0) add_experts("shared_expert.", m.params.shared, m.grads.shared, false, true);
  if (m.config.shared_gate)
    out.push_back({"shared_gate.weight", {H}, m.params.shared_gate.data(), m.grads.shared_gate.data(), true});
  return out;
}

Tensor<FLOAT_TYPE> MoELayer::gate_grad() const {
  return Tensor<FLOAT_TYPE>({impl_->config.hidden_dim, impl_->config.num_experts}, impl_->grads.gate.download());
}

Tensor<FLOAT_TYPE> MoELayer::expert_grad(std::int64_t global_id) const {
  const std::int64_t e = impl_->local_index(global_id, "MoELayer::expert_grad");
  Tensor<FLOAT_TYPE> flat({impl_->config.expert_param_count()});
  impl_->grads.experts.copy_to_flat(e, flat.data());
  return flat;
}

Tensor<FLOAT_TYPE> MoELayer::shared_expert_grad() const {
  Tensor<FLOAT_TYPE> flat({impl_->config.shared_expert_param_count()});
  if (flat.numel()) impl_->grads.shared.copy_to_flat(0, flat.data());
  return flat;
}

Tensor<FLOAT_TYPE> MoELayer::shared_gate_grad() const {
  return Tensor<FLOAT_TYPE>({static_cast<std::int64_t>(impl_->grads.shared_gate.size())},
                            impl_->grads.shared_gate.download());
}

const MOEConfig& MoELayer::config() const { return impl_->config; }
const LayerOptions& MoELayer::options() const { return impl_->options; }
Communicator& MoELayer::communicator() const { return *impl_->comm; }
Communicator* MoELayer::replica_communicator() const { return impl_->replicas; }
std::int64_t MoELayer::num_local_experts() const { return impl_->local_experts; }
std::int64_t MoELayer::first_local_expert() const { return impl_->first_expert; }
bool MoELayer::owns_expert(std::int64_t id) const {
  return id >= impl_->first_expert && id < impl_->first_expert + impl_->local_experts;
}

Tensor<FLOAT_TYPE> MoELayer::gate_weights() const {
  return Tensor<FLOAT_TYPE>({impl_->config.hidden_dim, impl_->config.num_experts}, impl_->params.gate.download());
}

namespace {

// Copies a host tensor over a backend buffer after checking its shape.
void set_buffer(kernels::Ops& ops, Buffer<float>& buffer, const Tensor<FLOAT_TYPE>& value,
                const std::vector<std::int64_t>& shape, const char* where, const char* name, const char* meaning) {
  MOE_CHECK_ARG(value.shape() == shape, where, name, " has shape ", shape_to_string(value.shape()), "; expected ",
                meaning, " = ", shape_to_string(shape));
  ops.copy_from_host(buffer.data(), value.data(), sizeof(float) * static_cast<std::size_t>(value.numel()));
}

}  // namespace

void MoELayer::set_gate_weights(const Tensor<FLOAT_TYPE>& gate_weights) {
  const MOEConfig& c = impl_->config;
  set_buffer(*impl_->ops, impl_->params.gate, gate_weights, {c.hidden_dim, c.num_experts},
             "MoELayer::set_gate_weights", "gate_weights", "[hidden_dim, num_experts]");
}

Tensor<FLOAT_TYPE> MoELayer::expert_params(std::int64_t global_id) const {
  const std::int64_t e = impl_->local_index(global_id, "MoELayer::expert_params");
  Tensor<FLOAT_TYPE> flat({impl_->config.expert_param_count()});
  impl_->params.experts.copy_to_flat(e, flat.data());
  return flat;
}

void MoELayer::set_expert_params(std::int64_t global_id, const Tensor<FLOAT_TYPE>& flat_params) {
  constexpr const char* where = "MoELayer::set_expert_params";
  const std::int64_t e = impl_->local_index(global_id, where);
  checks::flat_expert_params(flat_params.numel(), impl_->config, "flat_params", where);
  impl_->params.experts.copy_from_flat(e, flat_params.data());
}

Tensor<FLOAT_TYPE> MoELayer::expert_bias() const {
  return Tensor<FLOAT_TYPE>({static_cast<std::int64_t>(impl_->host_expert_bias.size())}, impl_->host_expert_bias);
}

void MoELayer::set_expert_bias(const Tensor<FLOAT_TYPE>& bias) {
  const MOEConfig& c = impl_->config;
  constexpr const char* where = "MoELayer::set_expert_bias";
  MOE_CHECK_ARG(c.has_expert_bias_vector(), where, "the layer's router is ", router_name(c.router),
                "; only the sigmoid router has an expert bias");
  set_buffer(*impl_->ops, impl_->expert_bias, bias, {c.num_experts}, where, "bias", "[num_experts]");
  impl_->host_expert_bias.assign(bias.data(), bias.data() + bias.numel());
}

void MoELayer::update_expert_bias() { impl_->update_expert_bias(); }

Tensor<FLOAT_TYPE> MoELayer::shared_expert_params() const {
  Tensor<FLOAT_TYPE> flat({impl_->config.shared_expert_param_count()});
  if (flat.numel()) impl_->params.shared.copy_to_flat(0, flat.data());
  return flat;
}

void MoELayer::set_shared_expert_params(const Tensor<FLOAT_TYPE>& flat_params) {
  const MOEConfig& c = impl_->config;
  constexpr const char* where = "MoELayer::set_shared_expert_params";
  MOE_CHECK_ARG(c.shared_expert_dim > 0, where, "the layer has no shared expert (shared_expert_dim = 0)");
  MOE_CHECK_ARG(flat_params.numel() == c.shared_expert_param_count(), where, "flat_params has ", flat_params.numel(),
                " elements; expected the shared expert's ", c.shared_expert_param_count());
  impl_->params.shared.copy_from_flat(0, flat_params.data());
}

Tensor<FLOAT_TYPE> MoELayer::shared_gate_weights() const {
  return Tensor<FLOAT_TYPE>({static_cast<std::int64_t>(impl_->params.shared_gate.size())},
                            impl_->params.shared_gate.download());
}

void MoELayer::set_shared_gate_weights(const Tensor<FLOAT_TYPE>& weights) {
  const MOEConfig& c = impl_->config;
  constexpr const char* where = "MoELayer::set_shared_gate_weights";
  MOE_CHECK_ARG(c.shared_gate, where, "the layer's shared expert has no gate (shared_gate = false)");
  set_buffer(*impl_->ops, impl_->params.shared_gate, weights, {c.hidden_dim}, where, "weights", "[hidden_dim]");
}

Tensor<FLOAT_TYPE> initial_gate_weights(const MOEConfig& config, std::uint64_t seed) {
  config.validate();
  Tensor<FLOAT_TYPE> gate({config.hidden_dim, config.num_experts});
  init_gate_weights(gate.data(), config, seed);
  return gate;
}

Tensor<FLOAT_TYPE> initial_expert_params(const MOEConfig& config, std::uint64_t seed, std::int64_t global_id) {
  config.validate();
  MOE_CHECK_ARG(global_id >= 0 && global_id < config.num_experts, "initial_expert_params", "global_id = ",
                global_id, "; expected an expert id in [0, ", config.num_experts, ")");
  Tensor<FLOAT_TYPE> flat({config.expert_param_count()});
  init_expert_params(flat.data(), config, seed, global_id);
  return flat;
}

Tensor<FLOAT_TYPE> initial_shared_expert_params(const MOEConfig& config, std::uint64_t seed) {
  config.validate();
  Tensor<FLOAT_TYPE> flat({config.shared_expert_param_count()});
  if (flat.numel()) init_shared_expert_params(flat.data(), config, seed);
  return flat;
}

Tensor<FLOAT_TYPE> initial_shared_gate_weights(const MOEConfig& config, std::uint64_t seed) {
  config.validate();
  Tensor<FLOAT_TYPE> gate({config.shared_gate ? config.hidden_dim : 0});
  if (gate.numel()) init_shared_gate_weights(gate.data(), config, seed);
  return gate;
}

}  // namespace moe

namespace moe::detail {

ParameterSet& LayerAccess::params(MoELayer& layer) { return layer.impl_->params; }
ParameterSet& LayerAccess::grads(MoELayer& layer) { return layer.impl_->grads; }
Buffer<float>& LayerAccess::expert_bias(MoELayer& layer) { return layer.impl_->expert_bias; }
std::vector<float>& LayerAccess::host_expert_bias(MoELayer& layer) { return layer.impl_->host_expert_bias; }
kernels::Ops& LayerAccess::ops(MoELayer& layer) { return *layer.impl_->ops; }
bool LayerAccess::pads_experts(MoELayer& layer) { return layer.impl_->single_rank_rows.pads_to_most(); }
LayerAccess::Speculation LayerAccess::speculation(MoELayer& layer) {
  const SingleRankRows& rows = layer.impl_->single_rank_rows;
  return {rows.speculation_hits(), rows.speculation_misses(), rows.last_speculated_rows()};
}

}  // namespace moe::detail
