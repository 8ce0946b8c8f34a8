// moe/import.hpp: each architecture's tensor names and routing settings, as the models
// on the hubs spell them, mapped onto the layer of docs/design.md §1b.
#include "moe/import.hpp"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "checkpoint/safetensors.hpp"
#include "collective_check.hpp"
#include "expert_layout.hpp"
#include "moe/error.hpp"

namespace moe {
namespace {

using nlohmann::json;
constexpr const char* kWhere = "import";

struct ArchSpec {
  const char* name;
  const char* block;                            // the MoE block under model.layers.L
  const char* gate_proj, *up_proj, *down_proj;  // an expert's projections
  const char* shared;                           // the shared expert's name in the block, or null
  bool shared_gate;                             // Qwen2-MoE scales it by sigmoid(x·w_s)
  bool sigmoid_router;                          // DeepSeek-V3
  std::int64_t default_top_k;
  bool default_normalize;
};

const ArchSpec kArchs[] = {
    {"mixtral", "block_sparse_moe", "w1", "w3", "w2", nullptr, false, false, 2, true},
    {"qwen2_moe", "mlp", "gate_proj", "up_proj", "down_proj", "shared_expert", true, false, 4, false},
    {"qwen3_moe", "mlp", "gate_proj", "up_proj", "down_proj", nullptr, false, false, 8, true},
    {"deepseek_v3", "mlp", "gate_proj", "up_proj", "down_proj", "shared_experts", false, true, 8, true},
};

const ArchSpec& spec_of(const std::string& arch) {
  for (const ArchSpec& a : kArchs)
    if (arch == a.name) return a;
  detail::fail(kWhere, "--arch = \"", arch, "\"; expected mixtral, qwen2_moe, qwen3_moe or deepseek_v3");
}

// The model's config.json, or an empty object.
json model_config(const checkpoint::SafetensorsModel& model) {
  const std::filesystem::path path = std::filesystem::path(model.directory()) / "config.json";
  if (!std::filesystem::exists(path)) return json::object();
  std::ifstream in(path);
  try {
    json j = json::parse(in);
    MOE_CHECK_ARG(j.is_object(), kWhere, "'", path.string(), "' is not a JSON object");
    return j;
  } catch (const json::exception& e) {
    detail::fail(kWhere, "'", path.string(), "' is not valid JSON: ", e.what());
  }
}

template <class T>
T setting(const json& config, const char* key, T fallback) {
  if (!config.contains(key) || config[key].is_null()) return fallback;
  try {
    return config[key].get<T>();
  } catch (const json::exception& e) {
    detail::fail(kWhere, "config.json: \"", key, "\" has the wrong type: ", e.what());
  }
}

Activation activation_of(const std::string& hidden_act) {
  if (hidden_act == "silu" || hidden_act == "swish") return Activation::SiLU;
  if (hidden_act == "gelu") return Activation::GELU;
  if (hidden_act == "gelu_pytorch_tanh" || hidden_act == "gelu_new") return Activation::GELUTanh;
  if (hidden_act == "relu") return Activation::ReLU;
  detail::fail(kWhere, "config.json: hidden_act = \"", hidden_act,
               "\"; expected silu, gelu, gelu_pytorch_tanh, gelu_new or relu");
}

struct Names {
  std::string block;
  const ArchSpec* spec;
  std::string gate() const { return block + ".gate.weight"; }
  std::string correction_bias() const { return block + ".gate.e_score_correction_bias"; }
  std::string expert(std::int64_t e, const char* proj) const {
    return block + ".experts." + std::to_string(e) + "." + proj + ".weight";
  }
  std::string shared(const char* proj) const { return block + "." + spec->shared + "." + proj + ".weight"; }
  std::string shared_gate() const { return block + ".shared_expert_gate.weight"; }
};

Names names_of(const ImportSource& s) {
  const ArchSpec& spec = spec_of(s.arch);
  MOE_CHECK_ARG(s.layer >= 0, kWhere, "--layer = ", s.layer, "; expected a layer index >= 0");
  return Names{"model.layers." + std::to_string(s.layer) + "." + spec.block, &spec};
}

// An [out, in] PyTorch weight into columns [col, col + out) of an [in, ld] block.
void transpose_into(const std::vector<float>& w, std::int64_t out, std::int64_t in, float* dst, std::int64_t ld,
                    std::int64_t col) {
  for (std::int64_t o = 0; o < out; ++o)
    for (std::int64_t i = 0; i < in; ++i) dst[i * ld + col + o] = w[static_cast<std::size_t>(o * in + i)];
}

// One glu expert (no biases) as a flat tensor of `layout`, from its three projections.
std::vector<float> flat_glu_expert(const checkpoint::SafetensorsModel& m, const ExpertLayout& layout,
                                   const std::string& gate, const std::string& up, const std::string& down) {
  const std::int64_t H = layout.hidden, F = layout.width;
  std::vector<float> flat(static_cast<std::size_t>(layout.param_count));
  float* w_in = flat.data() + layout.flat_offset(layout.index(kWeightIn));
  float* w_out = flat.data() + layout.flat_offset(layout.index(kWeightOut));
  transpose_into(m.read(gate, {F, H}), F, H, w_in, 2 * F, 0);
  transpose_into(m.read(up, {F, H}), F, H, w_in, 2 * F, F);
  transpose_into(m.read(down, {H, F}), H, F, w_out, H, 0);
  return flat;
}

}  // namespace

const std::vector<std::string>& importable_architectures() {
  static const std::vector<std::string> names = {"mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3"};
  return names;
}

MOEConfig imported_config(const ImportSource& s) {
  const Names n = names_of(s);
  const ArchSpec& spec = *n.spec;
  const checkpoint::SafetensorsModel model(s.model);
  const json config = model_config(model);
  if (spec.sigmoid_router) {
    const auto dense = setting<std::int64_t>(config, "first_k_dense_replace", 0);
    MOE_CHECK_ARG(s.layer >= dense, kWhere, "layer ", s.layer, " of this model is a dense MLP (config.json: "
                  "first_k_dense_replace = ", dense, "); its MoE layers start at ", dense);
    const auto scoring = setting<std::string>(config, "scoring_func", "sigmoid");
    MOE_CHECK_ARG(scoring == "sigmoid", kWhere, "config.json: scoring_func = \"", scoring,
                  "\"; deepseek_v3 routes with sigmoid scores");
  }
  MOE_CHECK_ARG(model.has(n.gate()), kWhere, "the model has no tensor ", n.gate(), " (is layer ", s.layer,
                " an MoE layer of a ", spec.name, " model?)");
  const std::vector<std::int64_t> gate_shape = model.shape(n.gate());
  MOE_CHECK_ARG(gate_shape.size() == 2, kWhere, "tensor ", n.gate(), " has ", gate_shape.size(),
                " dimensions; expected [num_experts, hidden_size]");
  MOEConfig c;
  c.num_experts = gate_shape[0];
  c.hidden_dim = gate_shape[1];
  const std::string first_gate = n.expert(0, spec.gate_proj);
  MOE_CHECK_ARG(model.has(first_gate), kWhere, "the model has no tensor ", first_gate);
  const std::vector<std::int64_t> expert_shape = model.shape(first_gate);
  MOE_CHECK_ARG(expert_shape.size() == 2 && expert_shape[1] == c.hidden_dim, kWhere, "tensor ", first_gate,
                " has the wrong shape; expected [expert_dim, ", c.hidden_dim, "]");
  c.expert_dim = expert_shape[0];
  c.top_k = s.top_k > 0 ? s.top_k : setting<std::int64_t>(config, "num_experts_per_tok", spec.default_top_k);
  c.expert_kind = ExpertKind::GLU;
  c.expert_bias = false;
  c.activation = activation_of(setting<std::string>(config, "hidden_act", "silu"));
  c.normalize_top_k = setting<bool>(config, "norm_topk_prob", spec.default_normalize);
  c.drop_tokens = false;
  if (spec.sigmoid_router) {
    c.router = RouterKind::Sigmoid;
    c.n_group = setting<std::int64_t>(config, "n_group", 1);
    c.topk_group = setting<std::int64_t>(config, "topk_group", 1);
    c.routed_scaling_factor = static_cast<float>(setting<double>(config, "routed_scaling_factor", 1.0));
  }
  if (spec.shared && model.has(n.shared(spec.gate_proj))) {
    const std::vector<std::int64_t> shared = model.shape(n.shared(spec.gate_proj));
    MOE_CHECK_ARG(shared.size() == 2 && shared[1] == c.hidden_dim, kWhere, "tensor ", n.shared(spec.gate_proj),
                  " has the wrong shape; expected [shared_expert_dim, ", c.hidden_dim, "]");
    c.shared_expert_dim = shared[0];
    c.shared_gate = spec.shared_gate;
  }
  try {
    c.validate();
  } catch (const Error& e) {
    detail::fail(kWhere, "layer ", s.layer, " of '", s.model, "' gives an invalid config: ", e.what());
  }
  return c;
}

void import_layer(const ImportSource& s, MoELayer& layer) {
  collective_check(layer.communicator(), [&] {
    const Names n = names_of(s);
    const ArchSpec& spec = *n.spec;
    const checkpoint::SafetensorsModel model(s.model);
    const MOEConfig& c = layer.config();
    const std::int64_t H = c.hidden_dim, E = c.num_experts;
    Tensor<FLOAT_TYPE> gate({H, E});
    transpose_into(model.read(n.gate(), {E, H}), E, H, gate.data(), E, 0);
    layer.set_gate_weights(gate);
    if (c.router == RouterKind::Sigmoid) {
      const std::vector<float> bias = model.read(n.correction_bias(), {E});
      layer.set_expert_bias(Tensor<FLOAT_TYPE>({E}, bias));
    }
    const ExpertLayout routed = expert_layout(c);
    for (std::int64_t e = layer.first_local_expert(); e < layer.first_local_expert() + layer.num_local_experts(); ++e)
      layer.set_expert_params(e, Tensor<FLOAT_TYPE>({routed.param_count},
                                                    flat_glu_expert(model, routed, n.expert(e, spec.gate_proj),
                                                                    n.expert(e, spec.up_proj),
                                                                    n.expert(e, spec.down_proj))));
    if (c.shared_expert_dim > 0) {
      const ExpertLayout shared = shared_expert_layout(c);
      layer.set_shared_expert_params(Tensor<FLOAT_TYPE>(
          {shared.param_count}, flat_glu_expert(model, shared, n.shared(spec.gate_proj), n.shared(spec.up_proj),
                                                n.shared(spec.down_proj))));
    }
    if (c.shared_gate) layer.set_shared_gate_weights(Tensor<FLOAT_TYPE>({H}, model.read(n.shared_gate(), {1, H})));
  });
}

}  // namespace moe
