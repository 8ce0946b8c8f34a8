// Save, load and inspect checkpoints in the layout of DESIGN §6.
#include "moe/checkpoint.hpp"

#include <cmath>
#include <filesystem>

#include "checkpoint/detail/hdf5.hpp"
#include "checkpoint/file_commit.hpp"
#include "checkpoint/format.hpp"
#include "collective_check.hpp"
#include "layer_access.hpp"
#include "moe/error.hpp"
#include "moe/optimizer.hpp"
#include "optimizer_access.hpp"

namespace moe {
namespace {

using checkpoint::ExpertTensor;
using hdf5::Dims;
using hdf5::Handle;

Dims with_experts(hsize_t experts, const Dims& shape) {
  Dims dims{experts};
  dims.insert(dims.end(), shape.begin(), shape.end());
  return dims;
}

// The file side of experts [first, first + count) of a [E, ...] dataset.
Handle expert_slab(const Dims& dims, std::int64_t first, std::int64_t count) {
  Handle space = hdf5::dataspace(dims);
  Dims start(dims.size(), 0), extent = dims;
  start[0] = static_cast<hsize_t>(first);
  extent[0] = static_cast<hsize_t>(count);
  hdf5::select_boxes(space.get(), start, {}, extent, {}, true);
  return space;
}

void write_gate(hid_t file, const MOEConfig& c, const std::string& name, const float* gate, bool this_rank_writes) {
  const Dims dims{static_cast<hsize_t>(c.hidden_dim), static_cast<hsize_t>(c.num_experts)};
  Handle dataset = hdf5::create_dataset(file, name, H5T_IEEE_F32LE, dims);
  Handle file_space = hdf5::dataspace(dims), memory = hdf5::dataspace(dims);
  if (!this_rank_writes) hdf5::select_none(file_space.get()), hdf5::select_none(memory.get());
  hdf5::write(dataset.get(), H5T_NATIVE_FLOAT, memory.get(), file_space.get(), gate, true);
}

// Writes this rank's experts [first, first + count) — tensor i's [count, ...] block at
// tensors[i] — into the four expert datasets of `group`, chunked one expert per chunk
// with Fletcher32: one collective transfer per dataset, whose memory block has the
// shape of its file selection.
void write_experts(hid_t file, const MOEConfig& c, const std::string& group, const float* const tensors[4],
                   std::int64_t first, std::int64_t count) {
  int i = 0;
  for (const ExpertTensor& t : checkpoint::expert_tensors(c, group)) {
    const Dims dims = with_experts(static_cast<hsize_t>(c.num_experts), t.shape);
    hdf5::DatasetOptions options;
    options.chunk = with_experts(1, t.shape);
    options.fletcher32 = true;
    Handle dataset = hdf5::create_dataset(file, t.dataset, H5T_IEEE_F32LE, dims, options);
    Handle file_space = expert_slab(dims, first, count);
    Handle memory = hdf5::dataspace(with_experts(static_cast<hsize_t>(count), t.shape));
    // Collective: parallel HDF5 writes filtered (checksummed) chunks only that way.
    hdf5::write(dataset.get(), H5T_NATIVE_FLOAT, memory.get(), file_space.get(), tensors[i++], true);
  }
}

// Reads `count` experts from `first` into `out(i)` (tensor i's [count, ...] block).
// Data errors (a checksum that fails) are returned, not thrown, so that every rank
// goes through the same calls and the caller can agree on the outcome.
template <class Destination>
std::string read_experts(hid_t file, const MOEConfig& c, const std::string& group, std::int64_t first,
                         std::int64_t count, Destination out) {
  std::string error;
  int i = 0;
  for (const ExpertTensor& t : checkpoint::expert_tensors(c, group)) {
    Handle dataset = hdf5::open_dataset(file, t.dataset);
    const Dims dims = hdf5::dataset_dims(dataset.get());
    Handle file_space = expert_slab(dims, first, count);
    Handle memory = hdf5::dataspace(with_experts(static_cast<hsize_t>(count), t.shape));
    try {
      hdf5::read(dataset.get(), H5T_NATIVE_FLOAT, memory.get(), file_space.get(), out(i), false);
    } catch (const Error& ex) {
      if (error.empty())
        error = detail::concat("reading ", t.dataset, " for experts [", first, ", ", first + count,
                               ") failed (a corrupted chunk fails its Fletcher32 checksum): ", ex.what());
    }
    ++i;
  }
  return error;
}

// One expert into a flat [W1, W2, b1, b2] tensor.
std::string read_flat_expert(hid_t file, const MOEConfig& c, std::int64_t e, float* flat) {
  const auto tensors = checkpoint::expert_tensors(c);
  return read_experts(file, c, "/experts", e, 1, [&](int i) { return flat + tensors[i].offset; });
}

std::string read_gate(hid_t file, const std::string& name, float* gate) {
  Handle dataset = hdf5::open_dataset(file, name);
  try {
    hdf5::read(dataset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, gate, false);
  } catch (const Error& e) {
    return detail::concat("reading ", name, " failed: ", e.what());
  }
  return {};
}

// A parameter group (the model's, or one optimizer state set): the replicated gate,
// written by rank 0, and this rank's experts. HDF5 reads and writes host memory: a
// GPU layer's buffers travel through host copies.
void write_group(hid_t file, const MOEConfig& c, const std::string& prefix, kernels::Ops& ops,
                 const Buffer<float>& gate, const ExpertStorage& experts, std::int64_t first, bool writes_gate) {
  const bool host = ops.backend() == kernels::Backend::CPU;
  std::vector<float> gate_copy, copies[4];
  const float* tensors[4];
  for (int i = 0; i < 4; ++i) {
    const Buffer<float>* b[] = {&experts.w1, &experts.w2, &experts.b1, &experts.b2};
    if (!host) copies[i] = b[i]->download();
    tensors[i] = host ? experts.tensor(i) : copies[i].data();
  }
  if (!host) gate_copy = gate.download();
  write_gate(file, c, checkpoint::gate_dataset(prefix), host ? gate.data() : gate_copy.data(), writes_gate);
  write_experts(file, c, checkpoint::experts_group(prefix), tensors, first, experts.experts);
}

std::string read_group(hid_t file, const MOEConfig& c, const std::string& prefix, kernels::Ops& ops,
                       Buffer<float>& gate, ExpertStorage& experts, std::int64_t first) {
  const bool host = ops.backend() == kernels::Backend::CPU;
  std::vector<float> gate_copy(host ? 0 : gate.size()), copies[4];
  for (int i = 0; i < 4; ++i)
    if (!host) copies[i].resize(static_cast<std::size_t>(experts.experts * experts.tensor_size(i)));
  std::string error = read_gate(file, checkpoint::gate_dataset(prefix), host ? gate.data() : gate_copy.data());
  const std::string experts_error =
      read_experts(file, c, checkpoint::experts_group(prefix), first, experts.experts,
                   [&](int i) { return host ? experts.tensor(i) : copies[i].data(); });
  if (!host) {
    gate.upload(gate_copy);
    Buffer<float>* b[] = {&experts.w1, &experts.w2, &experts.b1, &experts.b2};
    for (int i = 0; i < 4; ++i) b[i]->upload(copies[i]);
  }
  return error.empty() ? experts_error : error;
}

constexpr const char* kOptimizer = "/optimizer";
constexpr const char* kTraining = "/training";

void write_optimizer(hid_t file, const MOEConfig& c, kernels::Ops& ops, Optimizer& optimizer, std::int64_t first,
                     bool rank_zero) {
  Handle group = hdf5::create_group(file, kOptimizer);
  hdf5::write_attribute(group.get(), "type", std::string(optimizer_name(optimizer.type())));
  hdf5::write_attribute(group.get(), "step", optimizer.step_count());
  for (const auto& [name, value] : detail::OptimizerAccess::hyperparameters(optimizer))
    hdf5::write_attribute(group.get(), name, value);
  for (const detail::OptimizerState& s : detail::OptimizerAccess::state(optimizer))
    write_group(file, c, std::string(kOptimizer) + "/" + s.name, ops, *s.gate, *s.experts, first, rank_zero);
}

// Checks, on rank 0, that the file holds state for this optimizer.
void check_optimizer(hid_t file, const MOEConfig& c, Optimizer& optimizer, const std::string& path) {
  MOE_CHECK_ARG(hdf5::link_exists(file, kOptimizer), "load_checkpoint", "'", path,
                "' holds no optimizer state (it was saved without an optimizer); load it without one to start "
                "the optimizer afresh");
  Handle group = hdf5::open_group(file, kOptimizer);
  const std::string type = hdf5::read_string_attribute(group.get(), "type");
  MOE_CHECK_ARG(type == optimizer_name(optimizer.type()), "load_checkpoint", "'", path, "' holds ", type,
                " optimizer state but the optimizer given is ", optimizer_name(optimizer.type()));
  for (const detail::OptimizerState& s : detail::OptimizerAccess::state(optimizer))
    checkpoint::check_datasets(file, c, path, std::string(kOptimizer) + "/" + s.name);
}

std::string read_optimizer(hid_t file, const MOEConfig& c, kernels::Ops& ops, Optimizer& optimizer,
                           std::int64_t first) {
  Handle group = hdf5::open_group(file, kOptimizer);
  std::map<std::string, double> hyperparameters;
  for (const auto& [name, value] : detail::OptimizerAccess::hyperparameters(optimizer))
    hyperparameters[name] = hdf5::read_float64_attribute(group.get(), name);
  detail::OptimizerAccess::restore(optimizer, hdf5::read_int64_attribute(group.get(), "step"), hyperparameters);
  std::string error;
  for (const detail::OptimizerState& s : detail::OptimizerAccess::state(optimizer)) {
    const std::string e =
        read_group(file, c, std::string(kOptimizer) + "/" + s.name, ops, *s.gate, *s.experts, first);
    if (error.empty()) error = e;
  }
  return error;
}

// Opens `path` with the POSIX driver after the checks every reader wants first.
Handle open_checkpoint(const std::string& path) {
  MOE_CHECK_ARG(std::filesystem::exists(path), "checkpoint", "'", path, "' does not exist");
  MOE_CHECK_ARG(hdf5::is_hdf5_file(path), "checkpoint", "'", path, "' is not an HDF5 file");
  Handle file = hdf5::open_file(path, false, nullptr);
  checkpoint::check_is_checkpoint(file.get(), path);
  return file;
}

}  // namespace

void save_checkpoint(const std::string& path, const MoELayer& layer, std::int64_t step, Optimizer* optimizer,
                     const TrainingAttributes& training) {
  Communicator& comm = layer.communicator();
  const MOEConfig& c = layer.config();
  checkpoint::check_on_rank_zero(comm, [&] {
    checkpoint::check_writable_destination(path);
    MOE_CHECK_ARG(!optimizer || &detail::OptimizerAccess::layer(*optimizer) == &layer, "save_checkpoint",
                  "the optimizer given updates another layer");
  });
  {
    Handle file = hdf5::create_file(checkpoint::temporary_path(path), checkpoint::hdf5_communicator(comm));
    checkpoint::write_config_attributes(file.get(), c, step);
    MoELayer& mutable_layer = const_cast<MoELayer&>(layer);  // reads only; the accessors are not const
    kernels::Ops& ops = detail::LayerAccess::ops(mutable_layer);
    write_group(file.get(), c, "", ops, detail::LayerAccess::gate_buffer(mutable_layer),
                detail::LayerAccess::experts(mutable_layer), layer.first_local_expert(), comm.rank() == 0);
    if (optimizer) write_optimizer(file.get(), c, ops, *optimizer, layer.first_local_expert(), comm.rank() == 0);
    if (!training.empty()) {
      Handle group = hdf5::create_group(file.get(), kTraining);
      for (const auto& [name, value] : training) hdf5::write_attribute(group.get(), name, value);
    }
    file.close();
  }
  checkpoint::commit_file(comm, path);
}

std::int64_t load_checkpoint(const std::string& path, MoELayer& layer, Optimizer* optimizer,
                             TrainingAttributes* training) {
  Communicator& comm = layer.communicator();
  const MOEConfig& c = layer.config();
  // The file's metadata is checked once, on rank 0, and the verdict shared.
  checkpoint::check_on_rank_zero(comm, [&] {
    MOE_CHECK_ARG(!optimizer || &detail::OptimizerAccess::layer(*optimizer) == &layer, "load_checkpoint",
                  "the optimizer given updates another layer");
    Handle file = open_checkpoint(path);
    checkpoint::check_same_config(checkpoint::read_config_attributes(file.get(), path), c, path);
    checkpoint::check_datasets(file.get(), c, path);
    if (optimizer) check_optimizer(file.get(), c, *optimizer, path);
  });
  std::int64_t step = 0;
  std::string error;
  {
    Handle file = hdf5::open_file(path, false, checkpoint::hdf5_communicator(comm));
    step = checkpoint::read_step(file.get());
    kernels::Ops& ops = detail::LayerAccess::ops(layer);
    error = read_group(file.get(), c, "", ops, detail::LayerAccess::gate_buffer(layer), detail::LayerAccess::experts(layer),
                       layer.first_local_expert());
    if (optimizer) {
      const std::string optimizer_error = read_optimizer(file.get(), c, ops, *optimizer, layer.first_local_expert());
      if (error.empty()) error = optimizer_error;
    }
    if (training) {
      training->clear();
      if (hdf5::link_exists(file.get(), kTraining)) {
        Handle group = hdf5::open_group(file.get(), kTraining);
        for (const std::string& name : hdf5::attribute_names(group.get()))
          (*training)[name] = hdf5::read_int64_attribute(group.get(), name);
      }
    }
    file.close();
  }
  collective_check(comm, [&] { MOE_CHECK_ARG(error.empty(), "load_checkpoint", "'", path, "': ", error); });
  return step;
}

MOEConfig read_checkpoint_config(const std::string& path) {
  Handle file = open_checkpoint(path);
  return checkpoint::read_config_attributes(file.get(), path);
}

// A checkpoint opened on one process, its config read and its datasets checked.
struct CheckedFile {
  Handle file;
  MOEConfig config;
  std::int64_t step;
};

CheckedFile open_checked(const std::string& path) {
  Handle file = open_checkpoint(path);
  const MOEConfig config = checkpoint::read_config_attributes(file.get(), path);
  checkpoint::check_datasets(file.get(), config, path);
  const std::int64_t step = checkpoint::read_step(file.get());
  return {std::move(file), config, step};
}

ReferenceModel load_reference_model(const std::string& path) {
  const CheckedFile checked = open_checked(path);
  const Handle& file = checked.file;
  ReferenceModel model;
  model.config = checked.config;
  model.step = checked.step;
  const MOEConfig& c = model.config;
  model.gate_weights = Tensor<FLOAT_TYPE>({c.hidden_dim, c.num_experts});
  std::string error = read_gate(file.get(), checkpoint::gate_dataset(), model.gate_weights.data());
  for (std::int64_t e = 0; e < c.num_experts; ++e) {
    model.expert_params.emplace_back(std::vector<std::int64_t>{c.expert_param_count()});
    const std::string expert_error = read_flat_expert(file.get(), c, e, model.expert_params.back().data());
    if (error.empty()) error = expert_error;
  }
  MOE_CHECK_ARG(error.empty(), "load_reference_model", "'", path, "': ", error);
  return model;
}

CheckpointSummary inspect_checkpoint(const std::string& path) {
  const CheckedFile checked = open_checked(path);
  const Handle& file = checked.file;
  CheckpointSummary summary;
  summary.config = checked.config;
  summary.step = checked.step;
  const MOEConfig& c = summary.config;
  summary.has_optimizer_state = hdf5::link_exists(file.get(), kOptimizer);

  bool checksummed = true;
  for (const ExpertTensor& t : checkpoint::expert_tensors(c)) {
    Handle dataset = hdf5::open_dataset(file.get(), t.dataset);
    checksummed = checksummed && hdf5::has_fletcher32(dataset.get());
  }
  std::vector<float> flat(static_cast<std::size_t>(c.expert_param_count()));
  for (std::int64_t e = 0; e < c.num_experts; ++e) {
    ExpertSummary expert;
    expert.error = read_flat_expert(file.get(), c, e, flat.data());
    expert.checksum = !expert.error.empty() ? ExpertSummary::Checksum::Failed
                      : checksummed        ? ExpertSummary::Checksum::Verified
                                           : ExpertSummary::Checksum::NotPresent;
    double* norms[] = {&expert.norm_w1, &expert.norm_w2, &expert.norm_b1, &expert.norm_b2};
    int i = 0;
    for (const ExpertTensor& t : checkpoint::expert_tensors(c)) {
      double sum = 0;
      for (std::int64_t j = 0; j < t.count; ++j) sum += double(flat[t.offset + j]) * double(flat[t.offset + j]);
      *norms[i++] = std::sqrt(sum);
    }
    summary.experts.push_back(std::move(expert));
  }
  return summary;
}

}  // namespace moe
