#include "checkpoint/format.hpp"

#include "checkpoint/detail/hdf5.hpp"
#include "moe/config_fields.hpp"
#include "moe/error.hpp"

namespace moe::checkpoint {
namespace {

constexpr const char* kWhere = "checkpoint";

std::int64_t required_int(hid_t file, const char* name, const std::string& path) {
  MOE_CHECK_ARG(hdf5::attribute_exists(file, name), kWhere, "'", path, "' lacks the root attribute '", name,
                "' (docs/design.md §6 lists the attributes a checkpoint must have)");
  return hdf5::read_int64_attribute(file, name);
}

}  // namespace

std::string describe(const std::vector<hsize_t>& dims) {
  std::string out = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

void write_config_attributes(hid_t file, const MOEConfig& c, std::int64_t step) {
  hdf5::write_attribute(file, "format", std::string(kFormat));
  hdf5::write_attribute(file, "format_version", kFormatVersion);
  for (const ConfigField& field : config_fields()) {
    const FieldValue v = field.get(c);
    if (const auto* i = std::get_if<std::int64_t>(&v)) hdf5::write_attribute(file, field.name, *i);
    else if (const auto* d = std::get_if<double>(&v)) hdf5::write_attribute(file, field.name, *d);
    else hdf5::write_attribute(file, field.name, std::get<std::string>(v));
  }
  hdf5::write_attribute(file, "step", step);
}

MOEConfig read_config_attributes(hid_t file, const std::string& path) {
  const std::int64_t version = required_int(file, "format_version", path);
  MOEConfig c;
  for (const ConfigField& field : config_fields()) {
    if (field.since_version > version) continue;  // not in this version: the default
    MOE_CHECK_ARG(hdf5::attribute_exists(file, field.name), kWhere, "'", path, "' lacks the root attribute '",
                  field.name, "' (docs/design.md §6 lists the attributes a format_version ", version,
                  " checkpoint must have)");
    try {
      switch (field.type) {
        case FieldType::Int:
        case FieldType::Bool: field.set(c, hdf5::read_int64_attribute(file, field.name)); break;
        case FieldType::Float: field.set(c, hdf5::read_float64_attribute(file, field.name)); break;
        case FieldType::Choice: field.set(c, hdf5::read_string_attribute(file, field.name)); break;
      }
    } catch (const Error& e) {
      detail::fail(kWhere, "'", path, "': the root attribute '", field.name, "' is unreadable: ", e.what());
    }
  }
  try {
    c.validate();
  } catch (const Error& e) {
    detail::fail(kWhere, "'", path, "' holds an invalid config: ", e.what());
  }
  return c;
}

std::int64_t read_step(hid_t file) {
  return hdf5::attribute_exists(file, "step") ? hdf5::read_int64_attribute(file, "step") : 0;
}

void check_same_config(const MOEConfig& f, const MOEConfig& l, const std::string& path) {
  for (const ConfigField& field : config_fields()) {
    if (field_code(field, f) == field_code(field, l)) continue;
    detail::fail(kWhere, "'", path, "' was saved with ", field.name, " = ", field_text(field, f),
                 " but the layer has ", field.name, " = ", field_text(field, l),
                 "; build the layer from the checkpoint's config (read_checkpoint_config)");
  }
}

void check_is_checkpoint(hid_t file, const std::string& path) {
  MOE_CHECK_ARG(hdf5::attribute_exists(file, "format"), kWhere, "'", path,
                "' is an HDF5 file but not a moe checkpoint: it has no 'format' attribute (expected '", kFormat,
                "')");
  const std::string format = hdf5::read_string_attribute(file, "format");
  MOE_CHECK_ARG(format == kFormat, kWhere, "'", path, "' is not a moe checkpoint: format = '", format,
                "'; expected '", kFormat, "'");
  const std::int64_t version = required_int(file, "format_version", path);
  MOE_CHECK_ARG(version >= kOldestVersion && version <= kFormatVersion, kWhere, "'", path,
                "' has format_version = ", version, "; this moe reads versions ", kOldestVersion, " to ",
                kFormatVersion);
}

void check_datasets(hid_t file, const MOEConfig& c, const std::string& path, const std::string& prefix) {
  auto check = [&](const std::string& name, std::vector<hsize_t> expected, const std::string& meaning) {
    MOE_CHECK_ARG(hdf5::link_exists(file, name), kWhere, "'", path, "' lacks the dataset ", name, " ",
                  describe(expected), " ", meaning);
    hdf5::Handle dataset = hdf5::open_dataset(file, name);
    const auto dims = hdf5::dataset_dims(dataset.get());
    MOE_CHECK_ARG(dims == expected, kWhere, "'", path, "': dataset ", name, " has shape ", describe(dims),
                  "; expected ", describe(expected), " ", meaning);
    MOE_CHECK_ARG(hdf5::is_floating(dataset.get()), kWhere, "'", path, "': dataset ", name,
                  " is not floating point; expected float32");
  };
  auto dims_of = [](const std::vector<std::int64_t>& shape, bool with_experts, std::int64_t experts) {
    std::vector<hsize_t> dims;
    if (with_experts) dims.push_back(static_cast<hsize_t>(experts));
    for (std::int64_t d : shape) dims.push_back(static_cast<hsize_t>(d));
    return dims;
  };
  const auto H = static_cast<hsize_t>(c.hidden_dim), E = static_cast<hsize_t>(c.num_experts);
  check(gate_dataset(prefix), {H, E}, "(hidden_dim, num_experts)");
  const std::string experts = experts_group(prefix);
  for (const ExpertDatasetSpec& d : expert_layout(c).datasets)
    check(experts + "/" + d.name, dims_of(d.shape, true, c.num_experts),
          std::string("(num_experts, ") + (d.meaning + 1));
  if (c.shared_expert_dim > 0)
    for (const ExpertDatasetSpec& d : shared_expert_layout(c).datasets)
      check(shared_group(prefix) + "/" + d.name, dims_of(d.shape, false, 0),
            std::string(d.meaning) + " with expert_dim = shared_expert_dim");
  if (c.shared_gate) check(shared_gate_dataset(prefix), {H}, "(hidden_dim)");
  if (prefix.empty() && c.has_expert_bias_vector()) check(kExpertBiasDataset, {E}, "(num_experts)");
}

}  // namespace moe::checkpoint
