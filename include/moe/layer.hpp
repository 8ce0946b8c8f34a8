// MoELayer: one Mixture-of-Experts layer with its experts sharded across the ranks of
// a Communicator (docs/design.md §2). Rank r of P owns experts [r·E/P, (r+1)·E/P) and a
// replica of the gate; every rank routes its own tokens, sends them to the experts'
// owners, and combines what comes back. On every rank the result equals the
// single-process API (moe/moe.hpp) on that rank's tokens with all E experts.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moe/communicator.hpp"
#include "moe/config.hpp"
#include "moe/tensor.hpp"

namespace moe {

namespace detail {
struct LayerAccess;
}

// How token rows travel to the experts' owners.
enum class TrafficMode {
  // The minimum (docs/design.md §2): a token crosses to a rank once however many of that
  // rank's experts it chose, and the owner sums the token's weighted expert outputs
  // before sending one row back.
  Deduplicated,
  // One row per kept assignment each way (what simpler implementations send).
  PerAssignment,
};

// Where a layer computes. CUDA uses the GPU given by the rank's local rank (modulo the
// GPUs visible); tensors passed in and out stay in host memory.
enum class Device { CPU, CUDA };

// The expert GEMMs' arithmetic on the GPU (the CPU computes in FP32 only):
// FP32; TF32 tensor cores (inputs rounded to 10-bit mantissas, FP32 accumulation);
// BF16 (expert weights and inputs held in bfloat16, FP32 accumulation, forward only —
// backward GEMMs run in FP32).
enum class Precision { FP32, TF32, BF16 };
const char* precision_name(Precision precision);

// CUDA devices this process can use: 0 without a GPU, or in a build without CUDA.
int cuda_device_count();

struct LayerOptions {
  TrafficMode traffic = TrafficMode::Deduplicated;
  Device device = Device::CPU;
  // BF16 on CUDA at one rank also pads each forward's experts to the most rows any kept
  // (when that is at most 1.25 times the mean and none is empty) and runs their
  // products as one batched launch: the same results up to the products' rounding,
  // measured faster on an H200 (docs/design.md §4b). The environment's
  // MOE_EXPERT_ROWS=packed keeps the rows packed.
  Precision precision = Precision::FP32;
  // The training loss is L = L_task + aux_loss_coef · L_aux + z_loss_coef · L_z, with
  // L_aux the load-balancing loss (docs/design.md §1) and L_z the ST-MoE router z-loss (mean
  // over tokens of logsumexp(logits)²). backward() differentiates all three.
  float aux_loss_coef = 0.01f;
  float z_loss_coef = 0.0f;
  // For profiling: each all-to-all exchange starts with a barrier whose time goes to
  // PhaseTimes::wait, so that dispatch and send_back time the exchange itself, not
  // the wait for slower ranks (costs one barrier per exchange; off in production).
  bool separate_waits = false;
  // Capacity-padded experts (docs/design.md §4b): every expert runs on R = min(C, T)
  // rows, its kept rows then zero rows, so that the experts' shapes follow from the
  // token count alone and not from the routing. The output and gradients are those
  // of the packed layout (up to the GEMMs' rounding), for (C·E − kept)/kept more
  // expert FLOPs: for small batches, where the expert weights' reads bound the time,
  // about nothing. A CUDA-graph capture of a forward with a capacity needs it
  // (MoELayer::capture_forward). Needs a capacity (config.drop_tokens) and one rank.
  bool static_shapes = false;
  // On CUDA, the layer's streams take the device's greatest priority: where other work
  // shares the GPU (another layer's, on streams of the default priority), the scheduler
  // starts this layer's blocks first and the other's run in the time this one leaves
  // idle. The results are the same bits. The CPU has no priorities: there it changes
  // nothing. (moe train tries it for the student beside a teacher labelling ahead:
  // MOE_STUDENT_HIGH_PRIORITY, docs/design.md §4b.)
  bool high_priority = false;
};

// Whether a forward keeps what backward() needs.
enum class Pass { Inference, Training };

// Wall-clock seconds of the phases of one forward or one backward on this rank,
// each measured to its end (on CUDA, to the device's completion of its kernels, read
// from events on the stream: timing does not make the host wait at each phase).
// On one GPU the single-rank plan runs inside the routing's phase.
// At one rank nothing crosses the wire and the experts write each token's row
// themselves: pack, dispatch, send_back and combine are then 0. A backward runs the
// same phases in reverse: route is the router's backward, pack the gather of the
// output gradient's rows, combine their sum into ∂L/∂x, reduce the all-reduce of the
// replicated parameters' gradients.
struct PhaseTimes {
  double route = 0;          // gate GEMM, scores, top-k
  double plan = 0;           // capacity, dispatch plan and send layout
  double pack = 0;           // token rows copied into the send buffer, grouped by destination
  double dispatch = 0;       // row counts, token rows and their metadata to the experts' owners
  double experts = 0;        // this rank's expert FFNs
  double send_back = 0;      // the experts' rows back to the tokens' ranks
  double combine = 0;        // each token's returned rows summed into its output
  double shared_expert = 0;  // the always-active expert, when there is one
  double reduce = 0;         // all-reduces: load counts (forward), replicated gradients (backward)
  double wait = 0;           // barriers before the exchanges, with LayerOptions::separate_waits only

  // Every phase with its name, in the order a forward runs them: what reports iterate.
  struct Field {
    const char* name;
    double PhaseTimes::*seconds;
  };
  static constexpr Field fields[] = {
      {"route", &PhaseTimes::route},         {"plan", &PhaseTimes::plan},
      {"pack", &PhaseTimes::pack},           {"dispatch", &PhaseTimes::dispatch},
      {"experts", &PhaseTimes::experts},     {"send_back", &PhaseTimes::send_back},
      {"combine", &PhaseTimes::combine},     {"shared_expert", &PhaseTimes::shared_expert},
      {"reduce", &PhaseTimes::reduce},       {"wait", &PhaseTimes::wait},
  };
  double total() const {
    double sum = 0;
    for (const Field& f : fields) sum += this->*f.seconds;
    return sum;
  }
  PhaseTimes& operator+=(const PhaseTimes& other) {
    for (const Field& f : fields) this->*f.seconds += other.*f.seconds;
    return *this;
  }
};

// What one forward moved, for this rank.
struct ForwardStats {
  std::vector<std::int64_t> rows_sent;      // [P] token rows to each rank (own rank: a local copy)
  std::vector<std::int64_t> rows_received;  // [P] token rows from each rank
  std::int64_t bytes_sent = 0;              // token-row bytes to other ranks: what crosses the wire
  std::int64_t metadata_bytes_sent = 0;     // routing metadata to other ranks (expert ids, weights)
  std::int64_t dropped = 0;                 // this rank's assignments dropped by capacity
  // Over every rank of the layer's communicator (the expert group, with replicas):
  std::vector<std::int64_t> tokens_per_expert;  // [E] kept assignments per expert
  std::vector<std::int64_t> chosen_per_expert;  // [E] top-k choices per expert before capacity
  PhaseTimes times;                             // where this forward's time went
};

// One trainable tensor of this rank's layer, in the layer's own memory (host for the
// CPU, device for CUDA): what a framework views, without copies, as its parameter and
// the parameter's gradient. Routed experts are stacked, [local experts, …]; the
// replicated tensors (gate, shared expert, shared gate) must stay equal on every rank.
struct ParameterView {
  std::string name;  // e.g. "gate.weight", "experts.w1", "shared_expert.w_gate_up"
  std::vector<std::int64_t> shape;
  float* data = nullptr;
  float* grad = nullptr;  // backward() accumulates here; zero_grad() clears it
  bool replicated = false;
};

struct ForwardResult {
  Tensor<FLOAT_TYPE> output;          // the input's shape
  float aux_loss = 0.0f;              // this rank's load-balancing loss (docs/design.md §1)
  float z_loss = 0.0f;                // this rank's router z-loss
  Tensor<INT_TYPE> expert_indices;    // [T, k] each token's experts (before capacity)
  Tensor<FLOAT_TYPE> expert_weights;  // [T, k] their gate weights
  ForwardStats stats;
};

// A single-rank inference forward recorded once as a CUDA graph and replayed
// (MoELayer::capture_forward; docs/design.md §4b). Each replay computes the output for
// what the input memory holds then, on the layer's stream, as forward_async would;
// MoELayer::synchronize() waits for it. Replays read the layer's current parameters
// (bf16 copies made stale by a write are refreshed first). Valid while its layer lives
// and has freed none of the memory the recording reads: a later call with more tokens
// than any before may move the layer's buffers, and replay() then throws, asking for a
// new capture; after the layer is destroyed it throws too. To keep graphs for several
// token counts (a decoder's batch sizes), capture the largest first.
class ForwardGraph {
 public:
  ForwardGraph();
  ~ForwardGraph();
  ForwardGraph(ForwardGraph&&) noexcept;
  ForwardGraph& operator=(ForwardGraph&&) noexcept;
  void replay();

 private:
  friend class MoELayer;
  struct State;
  std::unique_ptr<State> state_;
};

class MoELayer {
 public:
  // Collective: every rank of `comm` builds the layer with the same config, seed and
  // options (checked: a difference is an error on every rank). Parameters are a
  // function of the seed and each expert's global id only, so the model is the same
  // whatever the number of ranks. The communicator must outlive the layer.
  MoELayer(const MOEConfig& config, Communicator& comm, std::uint64_t seed,
           LayerOptions options = {});
  // Expert parallelism inside data parallelism (docs/design.md §2), for more ranks than
  // a layer's experts can be sharded over: split_expert_parallel makes the communicators.
  // The experts are sharded over `experts` as above; `replicas` joins this rank with the
  // ranks at the same position of the other groups, which hold the same experts. Each
  // group routes and exchanges its own tokens, so forward() is the expert group's alone.
  // backward() sums every gradient over the whole job: the replicated tensors' over
  // every rank, each expert's over the tokens routed to it in every group. The sigmoid
  // router's bias update counts every group's choices, and a checkpoint is written by
  // the first group and read by all. Every rank must make the same calls. Collective
  // over both communicators; a failed check on any rank fails every rank.
  MoELayer(const MOEConfig& config, Communicator& experts, Communicator& replicas, std::uint64_t seed,
           LayerOptions options = {});
  ~MoELayer();
  MoELayer(MoELayer&&) noexcept;
  MoELayer& operator=(MoELayer&&) noexcept;

  // Collective. input: [T, H] or [B, S, H]; T may differ between ranks and may be 0.
  // Pass::Training keeps the activations backward() needs, until the next forward.
  ForwardResult forward(const Tensor<FLOAT_TYPE>& input, Pass pass = Pass::Inference);

  // Collective, after forward(…, Pass::Training). grad_output = ∂L_task/∂output (the
  // input's shape). Adds ∂L/∂θ of every parameter into the layer's gradients — the
  // gate's summed over ranks, each expert's over every token routed to it — and
  // returns ∂L/∂input. Dropped assignments get no gradient; selection is constant.
  Tensor<FLOAT_TYPE> backward(const Tensor<FLOAT_TYPE>& grad_output);
  // The same on token rows already in the layer's memory — device memory for
  // Device::CUDA (a framework's tensors, without host copies), host for the CPU:
  // input and output are [tokens, H]; ForwardResult::output is left empty.
  ForwardResult forward(const float* input, std::int64_t tokens, float* output, Pass pass = Pass::Inference);
  void backward(const float* grad_output, float* grad_input);
  // An inference forward without ForwardResult's host values (choices, losses,
  // statistics), on token rows in the layer's memory, on one rank, for a layer with
  // options.static_shapes or a dropless one (config.drop_tokens = false; on a GPU in
  // bf16, with hidden_dim and expert_dim multiples of 8): on a GPU the host only queues
  // the work on the layer's stream and returns, with no wait. synchronize() waits for
  // the output.
  void forward_async(const float* input, std::int64_t tokens, float* output);
  // Waits for the work queued on the layer's stream (a no-op on the CPU).
  void synchronize();
  // forward_async recorded as a CUDA graph (a GPU layer): the input and output memory,
  // and the token count, are fixed; each replay reads the input anew. The capture runs
  // the forward once first, which sizes the layer's buffers and makes its bf16 copies.
  ForwardGraph capture_forward(const float* input, std::int64_t tokens, float* output);
  // Where the last backward's time went.
  const PhaseTimes& backward_times() const;
  // The weights the next backward() gives ∂L/∂L_aux and ∂L/∂L_z — LayerOptions'
  // aux_loss_coef and z_loss_coef until set. For a framework whose autograd supplies
  // them with each backward. Local to this rank; z_loss_weight must be 0 with the
  // sigmoid router.
  void set_loss_weights(float aux_loss_weight, float z_loss_weight);

  // Clears the gradients (they accumulate over backward calls, for micro-batches).
  void zero_grad();
  Tensor<FLOAT_TYPE> gate_grad() const;                        // [H, E]
  Tensor<FLOAT_TYPE> expert_grad(std::int64_t global_id) const;  // flat, as expert_params
  Tensor<FLOAT_TYPE> shared_expert_grad() const;                 // flat; empty without a shared expert
  Tensor<FLOAT_TYPE> shared_gate_grad() const;                   // [H]; empty without a shared gate
  // Every trainable tensor with its gradient, always in the same order.
  std::vector<ParameterView> parameter_views();
  // Call after writing parameters through parameter_views() (an optimizer outside
  // moe): the CUDA BF16 path drops the weight copies it derived from the old values.
  void parameters_written();

  const MOEConfig& config() const;
  const LayerOptions& options() const;
  Communicator& communicator() const;  // the expert group's
  // The replicas' communicator; null without one (or when it has one rank).
  Communicator* replica_communicator() const;
  std::int64_t num_local_experts() const;
  std::int64_t first_local_expert() const;  // global id of this rank's first expert
  bool owns_expert(std::int64_t global_id) const;

  Tensor<FLOAT_TYPE> gate_weights() const;  // [H, E]
  // Sets this rank's replica; keep the replicas equal (training does).
  void set_gate_weights(const Tensor<FLOAT_TYPE>& gate_weights);
  // One local expert's parameters as a flat tensor: for ffn experts the reference
  // layout [W1, W2, b1, b2] (W1 [H,F], W2 [F,H]); for glu [W_in, W_down, b_in, b_down]
  // with W_in [H, 2F] holding the gate projection in columns [0, F) and the up
  // projection in [F, 2F) (b_in likewise); biases only when config.expert_bias.
  Tensor<FLOAT_TYPE> expert_params(std::int64_t global_id) const;
  void set_expert_params(std::int64_t global_id, const Tensor<FLOAT_TYPE>& flat_params);

  // Sigmoid router: the expert bias [E] added to the scores for selection only
  // (docs/design.md §1b), replicated, zero at construction. Empty for softmax.
  Tensor<FLOAT_TYPE> expert_bias() const;
  void set_expert_bias(const Tensor<FLOAT_TYPE>& bias);
  // Collective in effect (every rank must call it after the same steps; Optimizer::step
  // does; with replicas, collective over them): b_i += bias_update_rate · sign(mean load
  // − load_i), the loads being every rank's top-k choices per expert over the training
  // forwards since the last update.
  void update_expert_bias();

  // The shared expert (a flat tensor in the layout of expert_params, width
  // shared_expert_dim) and its gate [H]; replicated: set them equal on every rank.
  Tensor<FLOAT_TYPE> shared_expert_params() const;
  void set_shared_expert_params(const Tensor<FLOAT_TYPE>& flat_params);
  Tensor<FLOAT_TYPE> shared_gate_weights() const;
  void set_shared_gate_weights(const Tensor<FLOAT_TYPE>& weights);

 private:
  friend struct detail::LayerAccess;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The parameters a layer built with `seed` starts from, for any expert, without a
// layer: what the single-process reference needs to reproduce a sharded model.
Tensor<FLOAT_TYPE> initial_gate_weights(const MOEConfig& config, std::uint64_t seed);
Tensor<FLOAT_TYPE> initial_expert_params(const MOEConfig& config, std::uint64_t seed,
                                         std::int64_t global_id);
Tensor<FLOAT_TYPE> initial_shared_expert_params(const MOEConfig& config, std::uint64_t seed);
Tensor<FLOAT_TYPE> initial_shared_gate_weights(const MOEConfig& config, std::uint64_t seed);

}  // namespace moe
