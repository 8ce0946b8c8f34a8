// libFuzzer target for moe's own parsers of imported models: the bytes become a
// .safetensors file (8-byte header length, JSON header, data) and every tensor it
// names is read at the shape the header claims. Every failure must be a moe::Error; a
// crash, a sanitizer report or any other exception is a finding. scripts/fuzz.sh runs it.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "checkpoint/safetensors.hpp"
#include "moe/error.hpp"
#include "moe/import.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir ? dir : "/tmp") + "/moe-fuzz-" + std::to_string(::getpid()) + ".safetensors";
  }();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    const moe::checkpoint::SafetensorsModel model(path);
    for (const char* name : {"model.layers.0.mlp.gate.weight", "model.layers.0.mlp.experts.0.gate_proj.weight",
                             "a", "t"})
      if (model.has(name)) (void)model.read(name, model.shape(name));
  } catch (const moe::Error&) {
  }
  try {
    moe::ImportSource source;
    source.model = path;
    source.arch = "qwen3_moe";
    (void)moe::imported_config(source);
  } catch (const moe::Error&) {
  }
  return 0;
}
