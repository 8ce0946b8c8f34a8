// Every MOEConfig field described once: its name (the checkpoint attribute and the
// name in messages), type, command-line flag and the format version that added it.
// Cross-rank agreement, checkpoint I/O, comparison and the `moe` command line all
// iterate over config_fields(); adding a field means adding it here and to MOEConfig.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "moe/config.hpp"

namespace moe {

// Int: int64. Float: stored as float32 in MOEConfig, as float64 in files. Bool: 0/1 in
// files. Choice: one of `choices`, stored as its name.
enum class FieldType { Int, Float, Bool, Choice };
using FieldValue = std::variant<std::int64_t, double, std::string>;

struct ConfigField {
  const char* name;
  FieldType type;
  const char* flag;  // e.g. "--experts"; for a Bool the flag sets `flag_sets`
  bool flag_sets;    // Bool only
  const char* help;
  std::vector<std::string> choices;  // Choice only
  std::int64_t since_version;        // checkpoint format version that added it
  FieldValue (*get)(const MOEConfig&);
  void (*set)(MOEConfig&, const FieldValue&);  // throws moe::Error on a bad Choice name
};

const std::vector<ConfigField>& config_fields();
const ConfigField& config_field(const std::string& name);  // throws on an unknown name

// The value as text ("8", "1.25", "true", "silu"), for messages and listings.
std::string field_text(const ConfigField& field, const MOEConfig& config);
// A 64-bit code equal on two configs exactly when the field's values are equal (the
// float's bits, a choice's index): what ranks compare.
std::int64_t field_code(const ConfigField& field, const MOEConfig& config);

}  // namespace moe
