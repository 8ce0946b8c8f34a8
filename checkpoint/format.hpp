// The checkpoint format of DESIGN §6, in one place: names, the version, the config
// attributes, and each dataset's expected shape.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "moe/config.hpp"

namespace moe::checkpoint {

inline constexpr const char* kFormat = "moe-checkpoint";
inline constexpr std::int64_t kFormatVersion = 1;
// A parameter group: the model's at the root (prefix ""), an optimizer state set's
// under "/optimizer/<name>", each with the same datasets.
inline std::string gate_dataset(const std::string& prefix = "") { return prefix + "/gate/weight"; }
inline std::string experts_group(const std::string& prefix = "") { return prefix + "/experts"; }

// An expert tensor: its dataset, and where it sits in the flat [W1, W2, b1, b2].
struct ExpertTensor {
  std::string dataset;  // "/experts/w1", …
  const char* name;     // "w1", …
  std::int64_t offset;  // in the flat parameters
  std::int64_t count;   // elements per expert
  std::vector<hsize_t> shape;  // per expert, e.g. {H, F}
};
std::vector<ExpertTensor> expert_tensors(const MOEConfig& config, const std::string& group = "/experts");

// The file's path and a description of its shape, for messages.
std::string describe(const std::vector<hsize_t>& dims);

// Root attributes: the config and the step.
void write_config_attributes(hid_t file, const MOEConfig& config, std::int64_t step);
MOEConfig read_config_attributes(hid_t file, const std::string& path);
std::int64_t read_step(hid_t file);

// Throws, naming the first field that differs and both values.
void check_same_config(const MOEConfig& in_file, const MOEConfig& expected, const std::string& path);

// Throws unless `path` exists, is HDF5, and is a moe checkpoint of a supported version.
void check_is_checkpoint(hid_t file, const std::string& path);

// Throws unless every dataset of the parameter group at `prefix` exists with its
// expected shape and a floating type.
void check_datasets(hid_t file, const MOEConfig& config, const std::string& path, const std::string& prefix = "");

}  // namespace moe::checkpoint
