#include "moe/config_fields.hpp"

#include <cstring>
#include <sstream>

#include "moe/error.hpp"

namespace moe {
namespace {

std::int64_t as_int(const FieldValue& v) {
  if (const auto* i = std::get_if<std::int64_t>(&v)) return *i;
  if (const auto* d = std::get_if<double>(&v)) return static_cast<std::int64_t>(*d);
  detail::fail("config", "expected a number, got \"", std::get<std::string>(v), "\"");
}
double as_double(const FieldValue& v) {
  if (const auto* d = std::get_if<double>(&v)) return *d;
  if (const auto* i = std::get_if<std::int64_t>(&v)) return static_cast<double>(*i);
  detail::fail("config", "expected a number, got \"", std::get<std::string>(v), "\"");
}
const std::string& as_text(const FieldValue& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  detail::fail("config", "expected a name, got a number");
}

// One field per line: the accessors are captureless lambdas, so the table is data.
#define MOE_INT_FIELD(member, flag, help, since)                                          \
  ConfigField {                                                                           \
    #member, FieldType::Int, flag, false, help, {}, since,                                \
        [](const MOEConfig& c) { return FieldValue{std::int64_t{c.member}}; },           \
        [](MOEConfig& c, const FieldValue& v) { c.member = as_int(v); }                  \
  }
#define MOE_FLOAT_FIELD(member, flag, help, since)                                        \
  ConfigField {                                                                           \
    #member, FieldType::Float, flag, false, help, {}, since,                              \
        [](const MOEConfig& c) { return FieldValue{double{c.member}}; },                 \
        [](MOEConfig& c, const FieldValue& v) { c.member = static_cast<float>(as_double(v)); } \
  }
#define MOE_BOOL_FIELD(member, flag, sets, help, since)                                   \
  ConfigField {                                                                           \
    #member, FieldType::Bool, flag, sets, help, {}, since,                                \
        [](const MOEConfig& c) { return FieldValue{std::int64_t{c.member ? 1 : 0}}; },   \
        [](MOEConfig& c, const FieldValue& v) { c.member = as_int(v) != 0; }             \
  }
#define MOE_CHOICE_FIELD(member, flag, help, since, name_of, parse, ...)                  \
  ConfigField {                                                                           \
    #member, FieldType::Choice, flag, false, help, {__VA_ARGS__}, since,                  \
        [](const MOEConfig& c) { return FieldValue{std::string(name_of(c.member))}; },   \
        [](MOEConfig& c, const FieldValue& v) { c.member = parse(as_text(v)); }          \
  }

}  // namespace

const std::vector<ConfigField>& config_fields() {
  static const std::vector<ConfigField> fields = {
      MOE_INT_FIELD(num_experts, "--experts", "number of experts (E)", 1),
      MOE_INT_FIELD(top_k, "--top-k", "experts per token (k)", 1),
      MOE_INT_FIELD(hidden_dim, "--hidden", "hidden size (H)", 1),
      MOE_INT_FIELD(expert_dim, "--expert-dim", "expert width (F)", 1),
      MOE_FLOAT_FIELD(capacity_factor, "--capacity-factor", "capacity factor, 1.0 to 2.0", 1),
      MOE_BOOL_FIELD(normalize_top_k, "--raw-weights", false,
                     "use the raw router scores as weights instead of renormalising the top k", 1),
      MOE_BOOL_FIELD(drop_tokens, "--dropless", false, "keep every assignment (no capacity limit)", 1),
      MOE_CHOICE_FIELD(activation, "--activation", "relu, gelu, gelu_tanh or silu (default: relu for ffn, silu for glu)",
                       1, activation_name, parse_activation, "relu", "gelu", "silu", "gelu_tanh"),
      MOE_CHOICE_FIELD(expert_kind, "--expert-kind", "ffn (act(xW1+b1)W2+b2) or glu (SwiGLU/GeGLU)", 2,
                       expert_kind_name, parse_expert_kind, "ffn", "glu"),
      MOE_BOOL_FIELD(expert_bias, "--no-expert-bias", false, "experts without biases (as Mixtral, Qwen, DeepSeek)", 2),
      MOE_CHOICE_FIELD(router, "--router", "softmax, or sigmoid with an expert bias (DeepSeek-V3)", 2, router_name,
                       parse_router, "softmax", "sigmoid"),
      MOE_INT_FIELD(n_group, "--n-group", "expert groups for group-limited top-k (1 = off)", 2),
      MOE_INT_FIELD(topk_group, "--topk-group", "groups a token may use", 2),
      MOE_FLOAT_FIELD(routed_scaling_factor, "--routed-scaling", "multiplies the routed weights", 2),
      MOE_FLOAT_FIELD(bias_update_rate, "--bias-update-rate",
                      "sigmoid router: expert-bias step per optimizer step (0 = off)", 2),
      MOE_INT_FIELD(shared_expert_dim, "--shared-expert-dim", "width of the shared expert (0 = none)", 2),
      MOE_BOOL_FIELD(shared_gate, "--shared-gate", true, "scale the shared expert by sigmoid(x·w_s)", 2),
  };
  return fields;
}

#undef MOE_INT_FIELD
#undef MOE_FLOAT_FIELD
#undef MOE_BOOL_FIELD
#undef MOE_CHOICE_FIELD

const ConfigField& config_field(const std::string& name) {
  for (const ConfigField& f : config_fields())
    if (name == f.name) return f;
  detail::fail("config_field", "no config field is named '", name, "'");
}

std::string field_text(const ConfigField& field, const MOEConfig& config) {
  const FieldValue v = field.get(config);
  std::ostringstream out;
  switch (field.type) {
    case FieldType::Int: out << std::get<std::int64_t>(v); break;
    case FieldType::Float: out << std::get<double>(v); break;
    case FieldType::Bool: out << (std::get<std::int64_t>(v) ? "true" : "false"); break;
    case FieldType::Choice: out << std::get<std::string>(v); break;
  }
  return out.str();
}

std::int64_t field_code(const ConfigField& field, const MOEConfig& config) {
  const FieldValue v = field.get(config);
  switch (field.type) {
    case FieldType::Int:
    case FieldType::Bool: return std::get<std::int64_t>(v);
    case FieldType::Float: {
      const auto f = static_cast<float>(std::get<double>(v));  // the config holds float32
      std::uint32_t bits = 0;
      std::memcpy(&bits, &f, sizeof bits);
      return bits;
    }
    case FieldType::Choice: {
      const std::string& name = std::get<std::string>(v);
      for (std::size_t i = 0; i < field.choices.size(); ++i)
        if (field.choices[i] == name) return static_cast<std::int64_t>(i);
      return -1;
    }
  }
  return 0;
}

}  // namespace moe
