#include "checkpoint/format.hpp"

#include <cstring>

#include "checkpoint/detail/hdf5.hpp"
#include "moe/error.hpp"

namespace moe::checkpoint {
namespace {

constexpr const char* kWhere = "checkpoint";

std::int64_t required_int(hid_t file, const char* name, const std::string& path) {
  MOE_CHECK_ARG(hdf5::attribute_exists(file, name), kWhere, "'", path, "' lacks the root attribute '", name,
                "' (DESIGN §6 lists the attributes a checkpoint must have)");
  return hdf5::read_int64_attribute(file, name);
}

}  // namespace

std::vector<ExpertTensor> expert_tensors(const MOEConfig& c, const std::string& group) {
  const std::int64_t H = c.hidden_dim, F = c.expert_dim;
  const auto h = static_cast<hsize_t>(H), f = static_cast<hsize_t>(F);
  return {{group + "/w1", "w1", 0, H * F, {h, f}},
          {group + "/w2", "w2", H * F, F * H, {f, h}},
          {group + "/b1", "b1", 2 * H * F, F, {f}},
          {group + "/b2", "b2", 2 * H * F + F, H, {h}}};
}

std::string describe(const std::vector<hsize_t>& dims) {
  std::string out = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + std::to_string(dims[i]);
  return out + "]";
}

void write_config_attributes(hid_t file, const MOEConfig& c, std::int64_t step) {
  hdf5::write_attribute(file, "format", std::string(kFormat));
  hdf5::write_attribute(file, "format_version", kFormatVersion);
  hdf5::write_attribute(file, "num_experts", c.num_experts);
  hdf5::write_attribute(file, "top_k", c.top_k);
  hdf5::write_attribute(file, "hidden_dim", c.hidden_dim);
  hdf5::write_attribute(file, "expert_dim", c.expert_dim);
  hdf5::write_attribute(file, "capacity_factor", static_cast<double>(c.capacity_factor));
  hdf5::write_attribute(file, "normalize_top_k", std::int64_t{c.normalize_top_k});
  hdf5::write_attribute(file, "drop_tokens", std::int64_t{c.drop_tokens});
  hdf5::write_attribute(file, "activation", std::string(activation_name(c.activation)));
  hdf5::write_attribute(file, "step", step);
}

MOEConfig read_config_attributes(hid_t file, const std::string& path) {
  MOEConfig c;
  c.num_experts = required_int(file, "num_experts", path);
  c.top_k = required_int(file, "top_k", path);
  c.hidden_dim = required_int(file, "hidden_dim", path);
  c.expert_dim = required_int(file, "expert_dim", path);
  MOE_CHECK_ARG(hdf5::attribute_exists(file, "capacity_factor"), kWhere, "'", path,
                "' lacks the root attribute 'capacity_factor'");
  c.capacity_factor = static_cast<float>(hdf5::read_float64_attribute(file, "capacity_factor"));
  c.normalize_top_k = required_int(file, "normalize_top_k", path) != 0;
  c.drop_tokens = required_int(file, "drop_tokens", path) != 0;
  MOE_CHECK_ARG(hdf5::attribute_exists(file, "activation"), kWhere, "'", path,
                "' lacks the root attribute 'activation'");
  c.activation = parse_activation(hdf5::read_string_attribute(file, "activation"));
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
  auto differs = [&](const char* field, auto in_file, auto in_layer) {
    detail::fail(kWhere, "'", path, "' was saved with ", field, " = ", in_file, " but the layer has ", field,
                 " = ", in_layer, "; build the layer from the checkpoint's config (read_checkpoint_config)");
  };
  if (f.num_experts != l.num_experts) differs("num_experts", f.num_experts, l.num_experts);
  if (f.top_k != l.top_k) differs("top_k", f.top_k, l.top_k);
  if (f.hidden_dim != l.hidden_dim) differs("hidden_dim", f.hidden_dim, l.hidden_dim);
  if (f.expert_dim != l.expert_dim) differs("expert_dim", f.expert_dim, l.expert_dim);
  if (f.capacity_factor != l.capacity_factor) differs("capacity_factor", f.capacity_factor, l.capacity_factor);
  if (f.normalize_top_k != l.normalize_top_k) differs("normalize_top_k", f.normalize_top_k, l.normalize_top_k);
  if (f.drop_tokens != l.drop_tokens) differs("drop_tokens", f.drop_tokens, l.drop_tokens);
  if (f.activation != l.activation)
    differs("activation", activation_name(f.activation), activation_name(l.activation));
}

void check_is_checkpoint(hid_t file, const std::string& path) {
  MOE_CHECK_ARG(hdf5::attribute_exists(file, "format"), kWhere, "'", path,
                "' is an HDF5 file but not a moe checkpoint: it has no 'format' attribute (expected '", kFormat,
                "')");
  const std::string format = hdf5::read_string_attribute(file, "format");
  MOE_CHECK_ARG(format == kFormat, kWhere, "'", path, "' is not a moe checkpoint: format = '", format,
                "'; expected '", kFormat, "'");
  const std::int64_t version = required_int(file, "format_version", path);
  MOE_CHECK_ARG(version == kFormatVersion, kWhere, "'", path, "' has format_version = ", version,
                "; this moe reads version ", kFormatVersion);
}

void check_datasets(hid_t file, const MOEConfig& c, const std::string& path, const std::string& prefix) {
  auto check = [&](const std::string& name, std::vector<hsize_t> expected, const char* meaning) {
    MOE_CHECK_ARG(hdf5::link_exists(file, name), kWhere, "'", path, "' lacks the dataset ", name, " ",
                  describe(expected), " ", meaning);
    hdf5::Handle dataset = hdf5::open_dataset(file, name);
    const auto dims = hdf5::dataset_dims(dataset.get());
    MOE_CHECK_ARG(dims == expected, kWhere, "'", path, "': dataset ", name, " has shape ", describe(dims),
                  "; expected ", describe(expected), " ", meaning);
    MOE_CHECK_ARG(hdf5::is_floating(dataset.get()), kWhere, "'", path, "': dataset ", name,
                  " is not floating point; expected float32");
  };
  const auto E = static_cast<hsize_t>(c.num_experts);
  check(gate_dataset(prefix), {static_cast<hsize_t>(c.hidden_dim), E}, "(hidden_dim, num_experts)");
  const char* meanings[] = {"(num_experts, hidden_dim, expert_dim)", "(num_experts, expert_dim, hidden_dim)",
                            "(num_experts, expert_dim)", "(num_experts, hidden_dim)"};
  int i = 0;
  for (const ExpertTensor& t : expert_tensors(c, experts_group(prefix))) {
    std::vector<hsize_t> expected{E};
    expected.insert(expected.end(), t.shape.begin(), t.shape.end());
    check(t.dataset, expected, meanings[i++]);
  }
}

}  // namespace moe::checkpoint
