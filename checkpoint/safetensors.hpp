// Reading tensors from a model in safetensors files: one file, or several listed by a
// model.safetensors.index.json (its weight_map). The format is an 8-byte little-endian
// header length, a JSON header {name: {dtype, shape, data_offsets}}, then raw
// little-endian data. Only the tensors asked for are read (a layer of a large model
// without the rest). Every problem is a moe::Error naming the file and the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace moe::checkpoint {

class SafetensorsModel {
 public:
  // `path`: a .safetensors file, a model.safetensors.index.json, or a directory holding
  // either (the index is preferred, then model.safetensors, then a lone *.safetensors).
  explicit SafetensorsModel(const std::string& path);

  // The directory of the model's files (where config.json lives, if anywhere).
  const std::string& directory() const { return directory_; }
  bool has(const std::string& name) const { return weight_map_.count(name) != 0; }
  std::vector<std::int64_t> shape(const std::string& name) const;
  // The tensor converted to float32 (from BF16, F16 or F32), after checking its shape.
  std::vector<float> read(const std::string& name, const std::vector<std::int64_t>& expected_shape) const;

 private:
  struct TensorInfo {
    std::string file, dtype;
    std::vector<std::int64_t> shape;
    std::uint64_t begin = 0, end = 0;  // absolute byte offsets in the file
  };
  const TensorInfo& info(const std::string& name) const;
  void load_header(const std::string& file) const;

  std::string directory_;
  std::map<std::string, std::string> weight_map_;  // tensor name → file
  mutable std::map<std::string, TensorInfo> tensors_;
  mutable std::map<std::string, bool> headers_read_;
};

}  // namespace moe::checkpoint
