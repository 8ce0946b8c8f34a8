// MOEConfig: the shape and routing options of one MoE layer (docs/design.md §1 and
// §1b), named as in the reference API. moe/config_fields.hpp describes every field
// once (name, type, default, flag, checkpoint attribute) for the code that iterates.
#pragma once

#include <cstdint>
#include <string>

namespace moe {

// gelu is the exact (erf) form, gelu_tanh its tanh approximation; silu is x·sigmoid(x).
enum class Activation { ReLU, GELU, SiLU, GELUTanh };
// ffn: y = act(x·W1 + b1)·W2 + b2. glu: y = (act(x·Wg + bg) ⊙ (x·Wu + bu))·Wd + bd
// (SwiGLU with silu, GeGLU with gelu).
enum class ExpertKind { FFN, GLU };
// softmax: softmax scores, top-k. sigmoid: sigmoid scores, top-k of score + expert bias
// (aux-loss-free balancing, DeepSeek-V3).
enum class RouterKind { Softmax, Sigmoid };

// Names as the command line and checkpoints spell them; parse_* throw moe::Error
// naming the value and the valid names.
const char* activation_name(Activation activation);
Activation parse_activation(const std::string& name);
const char* expert_kind_name(ExpertKind kind);
ExpertKind parse_expert_kind(const std::string& name);
const char* router_name(RouterKind router);
RouterKind parse_router(const std::string& name);

struct MOEConfig {
  std::int64_t num_experts = 8;
  std::int64_t top_k = 2;
  std::int64_t hidden_dim = 512;
  std::int64_t expert_dim = 2048;
  float capacity_factor = 1.25f;
  // Divide the k selected scores by their sum (true), or keep the raw router scores.
  // With top_k = 1 a renormalised weight is s/s, a constant: the task loss then gives
  // the router no gradient (only the aux and z losses train it). Switch Transformer's
  // top-1 keeps the raw score (false); `moe train` prints a note for this case.
  bool normalize_top_k = true;
  // Apply the per-expert capacity and drop what exceeds it (true), or keep every assignment.
  bool drop_tokens = true;
  Activation activation = Activation::ReLU;

  // ---- The architectures of docs/design.md §1b; the defaults are the reference API's layer.
  ExpertKind expert_kind = ExpertKind::FFN;
  bool expert_bias = true;  // biases in the experts (Mixtral, Qwen and DeepSeek have none)
  RouterKind router = RouterKind::Softmax;
  // Group-limited top-k: experts form n_group consecutive groups; only the topk_group
  // best groups (by the sum of their two best scores) may be chosen. 1 = off.
  std::int64_t n_group = 1;
  std::int64_t topk_group = 1;
  float routed_scaling_factor = 1.0f;  // multiplies the routed weights after normalisation
  // Sigmoid router: after each optimizer step, b_i += rate · sign(mean load − load_i).
  float bias_update_rate = 1e-3f;
  std::int64_t shared_expert_dim = 0;  // width of the always-active shared expert; 0 = none
  bool shared_gate = false;            // scale the shared expert by sigmoid(x·w_s) (Qwen2-MoE)

  MOEConfig() = default;
  MOEConfig(std::int64_t num_experts, std::int64_t top_k, std::int64_t hidden_dim,
            std::int64_t expert_dim, float capacity_factor = 1.25f)
      : num_experts(num_experts),
        top_k(top_k),
        hidden_dim(hidden_dim),
        expert_dim(expert_dim),
        capacity_factor(capacity_factor) {}

  // Throws moe::Error naming the first invalid field, its value and the valid range.
  void validate() const;

  // Elements of one expert's flat parameter tensor (src/expert_layout.hpp): for ffn
  // with biases the reference API's [W1, W2, b1, b2], 2·H·F + F + H.
  std::int64_t expert_param_count() const;
  // The same for the shared expert (0 when there is none).
  std::int64_t shared_expert_param_count() const;
  bool has_expert_bias_vector() const { return router == RouterKind::Sigmoid; }

  // A one-line description, e.g. "E=8 k=2 H=512 F=2048 cf=1.25 relu normalize drop";
  // options away from the reference layer's are appended.
  std::string to_string() const;
};

// The activation an expert kind uses when none is named: relu for ffn, silu for glu.
Activation default_activation(ExpertKind kind);

// The reference API's check: prints the problem to stderr and returns false if the
// config is invalid, true otherwise.
bool validate_config(const MOEConfig& config);

}  // namespace moe
