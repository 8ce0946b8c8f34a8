// The checkpoint format of docs/design.md §6, in one place: names, the versions, the
// config attributes (from moe/config_fields.hpp) and each dataset's expected shape
// (from the expert layout).
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "expert_layout.hpp"
#include "moe/config.hpp"

namespace moe::checkpoint {

inline constexpr const char* kFormat = "moe-checkpoint";
inline constexpr std::int64_t kFormatVersion = 2;   // written
inline constexpr std::int64_t kOldestVersion = 1;   // still read (ffn experts, softmax router)

// A parameter group: the model's at the root (prefix ""), an optimizer state set's
// under "/optimizer/<name>", each with the same datasets.
inline std::string gate_dataset(const std::string& prefix = "") { return prefix + "/gate/weight"; }
inline std::string experts_group(const std::string& prefix = "") { return prefix + "/experts"; }
inline std::string shared_group(const std::string& prefix = "") { return prefix + "/shared"; }
inline std::string shared_gate_dataset(const std::string& prefix = "") { return prefix + "/shared/gate"; }
// The sigmoid router's expert bias: model state, not trained, so at the root only.
inline constexpr const char* kExpertBiasDataset = "/gate/expert_bias";

std::string describe(const std::vector<hsize_t>& dims);

// Root attributes: format, version, every config field, and the step.
void write_config_attributes(hid_t file, const MOEConfig& config, std::int64_t step);
// Fields a version-1 file lacks take MOEConfig's defaults (the reference layer's).
MOEConfig read_config_attributes(hid_t file, const std::string& path);
std::int64_t read_step(hid_t file);

// Throws, naming the first field that differs and both values.
void check_same_config(const MOEConfig& in_file, const MOEConfig& expected, const std::string& path);

// Throws unless `path` exists, is HDF5, and is a moe checkpoint of a supported version.
void check_is_checkpoint(hid_t file, const std::string& path);

// Throws unless every dataset of the parameter group at `prefix` (and, at the root,
// the expert bias) exists with its expected shape and a floating type.
void check_datasets(hid_t file, const MOEConfig& config, const std::string& path, const std::string& prefix = "");

}  // namespace moe::checkpoint
