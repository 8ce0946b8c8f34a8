// HDF5 checkpoints (docs/design.md §6): one file whatever the number of ranks, written in
// parallel (each rank its own experts' slices, through MPI-IO), loadable at any rank
// count that divides num_experts, and readable by any HDF5 tool (h5py, h5dump).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "moe/config.hpp"
#include "moe/layer.hpp"
#include "moe/optimizer.hpp"
#include "moe/tensor.hpp"

namespace moe {

// Integers a training loop keeps with its checkpoint (e.g. its data stream's seed and
// position), stored as attributes of /training.
using TrainingAttributes = std::map<std::string, std::int64_t>;

// Collective over the layer's communicator. Written under a unique temporary name
// ("<path>.moe-tmp-<hex>") and renamed to `path` once every rank has closed it, so a
// crash mid-save leaves the previous file at `path` intact; a second job saving to the
// same path meanwhile fails with "another job is writing"; an existing `path` that is
// not a regular file (a device, a FIFO) is refused. With an optimizer (of this layer), its type, step count,
// hyperparameters and state (sharded like the experts) go under /optimizer.
void save_checkpoint(const std::string& path, const MoELayer& layer, std::int64_t step = 0,
                     Optimizer* optimizer = nullptr, const TrainingAttributes& training = {});

// Collective. Checks the file against the layer (format, version, every config field,
// every dataset's presence and shape) and then reads the gate and this rank's experts.
// Returns the step stored in the file. Every rank throws the same moe::Error when the
// file is missing, not HDF5, not a moe checkpoint, of a different config, or corrupt
// (a Fletcher32 checksum that does not match). With an optimizer, its state, step
// count and hyperparameters are restored too (the file must hold state of the same
// optimizer type); with `training`, the /training attributes are returned in it.
std::int64_t load_checkpoint(const std::string& path, MoELayer& layer, Optimizer* optimizer = nullptr,
                             TrainingAttributes* training = nullptr);

// The config stored in a checkpoint (to build a layer that can load it), after checking
// that every dataset has the shape the config implies.
MOEConfig read_checkpoint_config(const std::string& path);

// A checkpoint as the single-process reference API takes it.
struct ReferenceModel {
  MOEConfig config;
  Tensor<FLOAT_TYPE> gate_weights;               // [H, E]
  std::vector<Tensor<FLOAT_TYPE>> expert_params;  // E flat experts (MoELayer::expert_params' layout)
  Tensor<FLOAT_TYPE> expert_bias;                 // [E] sigmoid router; else empty
  Tensor<FLOAT_TYPE> shared_expert_params;        // flat; empty without a shared expert
  Tensor<FLOAT_TYPE> shared_gate_weights;         // [H]; empty without a shared gate
  std::int64_t step = 0;
};
ReferenceModel load_reference_model(const std::string& path);

// What `moe info` prints: config, step, for every expert the L2 norm of each of its
// datasets (expert_tensors names them) and whether its checksums verify, and the same
// for every replicated tensor (gate, expert bias, shared expert). A tensor that could
// not be read has an error and no numbers.
enum class TensorChecksum { Verified, NotPresent, Failed };
struct ExpertSummary {
  std::vector<double> norms;  // one per CheckpointSummary::expert_tensors; empty when unreadable
  using Checksum = TensorChecksum;
  Checksum checksum = Checksum::Verified;
  std::string error;  // why reading it failed, when checksum == Failed
};
struct TensorSummary {
  std::string name;  // its dataset, e.g. "/gate/weight"
  double norm = 0;
  TensorChecksum checksum = TensorChecksum::Verified;
  std::string error;
};
struct CheckpointSummary {
  MOEConfig config;
  std::int64_t step = 0;
  bool has_optimizer_state = false;
  std::vector<std::string> expert_tensors;  // e.g. w1 w2 b1 b2, or w_gate w_up w_down
  std::vector<ExpertSummary> experts;
  std::vector<TensorSummary> tensors;
};
CheckpointSummary inspect_checkpoint(const std::string& path);

}  // namespace moe
