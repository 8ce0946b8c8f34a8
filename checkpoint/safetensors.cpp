#include "checkpoint/safetensors.hpp"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "moe/error.hpp"

namespace moe::checkpoint {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
constexpr const char* kWhere = "import";
// A header is JSON describing tensors: far below this even for the largest shards.
constexpr std::uint64_t kMaxHeaderBytes = std::uint64_t{100} << 20;

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

std::size_t dtype_bytes(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "BF16" || dtype == "F16") return 2;
  return 0;
}

float bf16_to_float(std::uint16_t h) {
  const std::uint32_t bits = std::uint32_t{h} << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// IEEE binary16 to binary32, subnormals, infinities and NaN included.
float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  std::uint32_t exponent = (h >> 10) & 0x1Fu, mantissa = h & 0x3FFu, bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int shift = 0;
      while (!(mantissa & 0x400u)) mantissa <<= 1, ++shift;
      mantissa &= 0x3FFu;
      bits = sign | (std::uint32_t(127 - 15 + 1 - shift) << 23) | (mantissa << 13);
    }
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

json parse_json(const std::string& text, const std::string& what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    detail::fail(kWhere, what, " is not valid JSON: ", e.what());
  }
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  MOE_CHECK_ARG(in, kWhere, "cannot open '", path.string(), "'");
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

SafetensorsModel::SafetensorsModel(const std::string& path) {
  static_assert(sizeof(float) == 4, "float32 expected");
  const fs::path p(path);
  MOE_CHECK_ARG(fs::exists(p), kWhere, "'", path, "' does not exist; expected a .safetensors file, an index "
                "(model.safetensors.index.json) or a directory holding them");
  fs::path index, single;
  if (fs::is_directory(p)) {
    directory_ = p.string();
    if (fs::exists(p / "model.safetensors.index.json")) {
      index = p / "model.safetensors.index.json";
    } else if (fs::exists(p / "model.safetensors")) {
      single = p / "model.safetensors";
    } else {
      std::vector<fs::path> found;
      for (const auto& entry : fs::directory_iterator(p))
        if (entry.path().extension() == ".safetensors") found.push_back(entry.path());
      MOE_CHECK_ARG(found.size() == 1, kWhere, "'", path, "' holds ", found.size(),
                    " .safetensors files and no model.safetensors.index.json; expected one file, or an index");
      single = found[0];
    }
  } else {
    directory_ = p.parent_path().empty() ? "." : p.parent_path().string();
    (p.extension() == ".json" ? index : single) = p;
  }
  if (!index.empty()) {
    const json j = parse_json(read_text(index), "'" + index.string() + "'");
    MOE_CHECK_ARG(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), kWhere, "'",
                  index.string(), "' has no weight_map object");
    for (const auto& [name, file] : j["weight_map"].items()) {
      MOE_CHECK_ARG(file.is_string(), kWhere, "'", index.string(), "': weight_map[\"", name, "\"] is not a file name");
      weight_map_[name] = (fs::path(directory_) / file.get<std::string>()).string();
    }
  } else {
    load_header(single.string());
    for (const auto& [name, info] : tensors_) weight_map_[name] = info.file;
  }
}

void SafetensorsModel::load_header(const std::string& file) const {
  if (headers_read_[file]) return;
  std::ifstream in(file, std::ios::binary);
  MOE_CHECK_ARG(in, kWhere, "cannot open the safetensors file '", file, "'");
  const std::uint64_t size = fs::file_size(file);
  unsigned char length_bytes[8] = {};
  in.read(reinterpret_cast<char*>(length_bytes), 8);
  MOE_CHECK_ARG(in && size >= 8, kWhere, "'", file, "' is shorter than a safetensors header (", size, " bytes)");
  std::uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | length_bytes[i];
  MOE_CHECK_ARG(length <= kMaxHeaderBytes && length <= size - 8, kWhere, "'", file, "' claims a ", length,
                "-byte header in a ", size, "-byte file; not a safetensors file");
  std::string header(length, '\0');
  in.read(header.data(), static_cast<std::streamsize>(length));
  MOE_CHECK_ARG(in, kWhere, "'", file, "': the header could not be read");
  const json j = parse_json(header, "the header of '" + file + "'");
  MOE_CHECK_ARG(j.is_object(), kWhere, "the header of '", file, "' is not a JSON object");
  const std::uint64_t data_start = 8 + length;
  for (const auto& [name, t] : j.items()) {
    if (name == "__metadata__") continue;
    TensorInfo info;
    info.file = file;
    try {
      info.dtype = t.at("dtype").get<std::string>();
      info.shape = t.at("shape").get<std::vector<std::int64_t>>();
      const auto offsets = t.at("data_offsets").get<std::vector<std::uint64_t>>();
      MOE_CHECK_ARG(offsets.size() == 2 && offsets[0] <= offsets[1], kWhere, "'", file, "': tensor ", name,
                    " has data_offsets that are not [begin, end]");
      info.begin = data_start + offsets[0];
      info.end = data_start + offsets[1];
    } catch (const json::exception& e) {
      detail::fail(kWhere, "'", file, "': tensor ", name, " has a malformed entry: ", e.what());
    }
    MOE_CHECK_ARG(info.end <= size, kWhere, "'", file, "': tensor ", name, " lies past the end of the file (byte ",
                  info.end, " of ", size, "); the file is truncated");
    tensors_[name] = std::move(info);
  }
  headers_read_[file] = true;
}

const SafetensorsModel::TensorInfo& SafetensorsModel::info(const std::string& name) const {
  const auto it = weight_map_.find(name);
  MOE_CHECK_ARG(it != weight_map_.end(), kWhere, "the model has no tensor ", name);
  load_header(it->second);
  const auto t = tensors_.find(name);
  MOE_CHECK_ARG(t != tensors_.end(), kWhere, "the index puts tensor ", name, " in '", it->second,
                "' but that file has no such tensor");
  return t->second;
}

std::vector<std::int64_t> SafetensorsModel::shape(const std::string& name) const { return info(name).shape; }

std::vector<float> SafetensorsModel::read(const std::string& name, const std::vector<std::int64_t>& expected) const {
  const TensorInfo& t = info(name);
  MOE_CHECK_ARG(t.shape == expected, kWhere, "tensor ", name, " has shape ", shape_text(t.shape), "; expected ",
                shape_text(expected));
  const std::size_t bytes = dtype_bytes(t.dtype);
  MOE_CHECK_ARG(bytes != 0, kWhere, "tensor ", name, " has dtype ", t.dtype, "; expected BF16, F16 or F32");
  std::uint64_t count = 1;
  for (std::int64_t d : t.shape) count *= static_cast<std::uint64_t>(d);
  MOE_CHECK_ARG(t.end - t.begin == count * bytes, kWhere, "tensor ", name, " spans ", t.end - t.begin,
                " bytes; its shape and dtype need ", count * bytes);
  std::vector<unsigned char> raw(static_cast<std::size_t>(t.end - t.begin));
  std::ifstream in(t.file, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(t.begin));
  in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size()));
  MOE_CHECK_ARG(in, kWhere, "reading tensor ", name, " from '", t.file, "' failed");
  std::vector<float> out(static_cast<std::size_t>(count));
  for (std::size_t i = 0; i < out.size(); ++i) {
    const unsigned char* b = raw.data() + i * bytes;  // little-endian in the file
    if (bytes == 4) {
      const std::uint32_t bits = std::uint32_t{b[0]} | std::uint32_t{b[1]} << 8 | std::uint32_t{b[2]} << 16 |
                                 std::uint32_t{b[3]} << 24;
      std::memcpy(&out[i], &bits, 4);
    } else {
      const auto h = static_cast<std::uint16_t>(b[0] | b[1] << 8);
      out[i] = t.dtype == "BF16" ? bf16_to_float(h) : f16_to_float(h);
    }
  }
  return out;
}

}  // namespace moe::checkpoint
