// Bringing the MoE block of an existing model in from its safetensors files (the
// layout of the Hugging Face model hubs): Mixtral, Qwen2-MoE, Qwen3-MoE and
// DeepSeek-V3. The layer's config comes from the tensors' shapes and the model's
// config.json (when present); weights are converted to float32 and transposed from
// PyTorch's [out, in] to this library's [in, out] (docs/design.md §6).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/config.hpp"
#include "moe/layer.hpp"

namespace moe {

// "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3".
const std::vector<std::string>& importable_architectures();

struct ImportSource {
  std::string model;  // a .safetensors file, a model.safetensors.index.json, or their directory
  std::string arch;
  std::int64_t layer = 0;
  std::int64_t top_k = 0;  // 0: num_experts_per_tok from config.json, else the architecture's usual k
};

// The config of that layer. Imported layers are dropless, as these models run.
MOEConfig imported_config(const ImportSource& source);

// Collective over the layer's communicator: fills the gate, the expert bias, the
// shared expert and this rank's experts of `layer` (built from imported_config) from
// the model. Every rank throws the same moe::Error, naming the tensor, when one is
// missing, of the wrong shape or of an unknown dtype.
void import_layer(const ImportSource& source, MoELayer& layer);

}  // namespace moe
