// Save, load and inspect checkpoints in the layout of docs/design.md §6.
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

// Host memory with a backend buffer's contents: the buffer itself on the CPU, else a copy.
struct HostView {
  std::vector<float> copy;
  const float* data = nullptr;
};
HostView host_view(kernels::Ops& ops, const float* data, std::int64_t count) {
  HostView v;
  if (ops.backend() == kernels::Backend::CPU) {
    v.data = data;
  } else {
    v.copy.resize(static_cast<std::size_t>(count));
    if (count) ops.copy_to_host(v.copy.data(), data, sizeof(float) * v.copy.size());
    v.data = v.copy.data();
  }
  return v;
}

// A replicated tensor (gate, expert bias, shared expert): one chunk with a Fletcher32
// checksum, written by one rank; the others join the collective call with nothing.
void write_replicated(Communicator& comm, hid_t file, const std::string& name, const Dims& dims, const float* data,
                      bool this_rank_writes) {
  hdf5::collectively(comm, [&] {
    hdf5::DatasetOptions options;
    options.chunk = dims;
    options.fletcher32 = true;
    Handle dataset = hdf5::create_dataset(file, name, H5T_IEEE_F32LE, dims, options);
    Handle file_space = hdf5::dataspace(dims), memory = hdf5::dataspace(dims);
    if (!this_rank_writes) hdf5::select_none(file_space.get()), hdf5::select_none(memory.get());
    hdf5::write(dataset.get(), H5T_NATIVE_FLOAT, memory.get(), file_space.get(), data, true);
    dataset.close();
  });
}

// Reads a whole dataset; a data error (a checksum that fails) is returned, not thrown,
// so that every rank goes through the same calls and the caller can agree on the outcome.
std::string read_whole(hid_t file, const std::string& name, float* out) {
  Handle dataset = hdf5::open_dataset(file, name);
  try {
    hdf5::read(dataset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, out, false);
  } catch (const Error& e) {
    return detail::concat("reading ", name, " failed (a corrupted chunk fails its Fletcher32 checksum): ", e.what());
  }
  return {};
}

Dims dims_of(const std::vector<std::int64_t>& shape) {
  Dims dims;
  for (std::int64_t d : shape) dims.push_back(static_cast<hsize_t>(d));
  return dims;
}

// Dataset d of experts [first, first + count), packed contiguously from the storage
// tensor block `tensor` (host memory), into `out`.
const float* packed_dataset(const ExpertLayout& layout, const ExpertDatasetSpec& d, const float* tensor,
                            std::int64_t count, std::vector<float>& out) {
  if (dataset_is_whole_tensor(layout, d)) return tensor;
  out.resize(static_cast<std::size_t>(count * d.count()));
  copy_dataset_out(layout, d, tensor, count, out.data());
  return out.data();
}

// Writes experts [first, first + count) of `experts` into the datasets of `group`,
// chunked one expert per chunk with Fletcher32: one collective transfer per dataset,
// whose memory block has the shape of its file selection.
void write_experts(Communicator& comm, hid_t file, kernels::Ops& ops, const std::string& group, const ExpertStorage& experts,
                   std::int64_t total_experts, std::int64_t first) {
  const ExpertLayout& layout = experts.layout;
  std::vector<HostView> tensors;
  for (std::size_t i = 0; i < experts.tensor_count(); ++i)
    tensors.push_back(host_view(ops, experts.tensor(i), experts.total_size(i)));
  std::vector<float> packed;
  for (const ExpertDatasetSpec& d : layout.datasets) {
    const Dims shape = dims_of(d.shape);
    const Dims dims = with_experts(static_cast<hsize_t>(total_experts), shape);
    const float* data =
        packed_dataset(layout, d, tensors[static_cast<std::size_t>(d.tensor)].data, experts.experts, packed);
    hdf5::collectively(comm, [&] {
      hdf5::DatasetOptions options;
      options.chunk = with_experts(1, shape);
      options.fletcher32 = true;
      Handle dataset = hdf5::create_dataset(file, group + "/" + d.name, H5T_IEEE_F32LE, dims, options);
      Handle file_space = expert_slab(dims, first, experts.experts);
      Handle memory = hdf5::dataspace(with_experts(static_cast<hsize_t>(experts.experts), shape));
      // Collective: parallel HDF5 writes filtered (checksummed) chunks only that way.
      hdf5::write(dataset.get(), H5T_NATIVE_FLOAT, memory.get(), file_space.get(), data, true);
      dataset.close();
    });
  }
}

// Reads experts [first, first + count) of `group` into the host blocks tensors[i]
// ([count, rows, cols] of storage tensor i). Errors as read_whole.
std::string read_experts(hid_t file, const ExpertLayout& layout, const std::string& group, std::int64_t first,
                         std::int64_t count, const std::vector<float*>& tensors) {
  std::string error;
  std::vector<float> packed;
  for (const ExpertDatasetSpec& d : layout.datasets) {
    const std::string name = group + "/" + d.name;
    Handle dataset = hdf5::open_dataset(file, name);
    const Dims dims = hdf5::dataset_dims(dataset.get());
    Handle file_space = expert_slab(dims, first, count);
    Handle memory = hdf5::dataspace(with_experts(static_cast<hsize_t>(count), dims_of(d.shape)));
    float* tensor = tensors[static_cast<std::size_t>(d.tensor)];
    const bool whole = dataset_is_whole_tensor(layout, d);
    if (!whole) packed.resize(static_cast<std::size_t>(count * d.count()));
    try {
      hdf5::read(dataset.get(), H5T_NATIVE_FLOAT, memory.get(), file_space.get(), whole ? tensor : packed.data(),
                 false);
    } catch (const Error& ex) {
      if (error.empty())
        error = detail::concat("reading ", name, " for experts [", first, ", ", first + count,
                               ") failed (a corrupted chunk fails its Fletcher32 checksum): ", ex.what());
    }
    if (!whole) copy_dataset_in(layout, d, packed.data(), count, tensor);
  }
  return error;
}

// The same for a storage without the expert axis in the file (the shared expert).
std::string read_single_expert(hid_t file, const ExpertLayout& layout, const std::string& group, float* flat) {
  std::string error;
  std::vector<float> packed;
  for (const ExpertDatasetSpec& d : layout.datasets) {
    packed.resize(static_cast<std::size_t>(d.count()));
    const std::string e = read_whole(file, group + "/" + d.name, packed.data());
    if (error.empty()) error = e;
    copy_dataset_in(layout, d, packed.data(), 1, flat + layout.flat_offset(d.tensor));
  }
  return error;
}

// Into an ExpertStorage's buffers from host blocks (an upload on a GPU).
struct HostBlocks {
  std::vector<std::vector<float>> copies;
  std::vector<float*> pointers;
};
HostBlocks host_blocks(kernels::Ops& ops, ExpertStorage& experts) {
  HostBlocks b;
  const bool host = ops.backend() == kernels::Backend::CPU;
  b.copies.resize(experts.tensor_count());
  for (std::size_t i = 0; i < experts.tensor_count(); ++i) {
    if (!host) b.copies[i].resize(static_cast<std::size_t>(experts.total_size(i)));
    b.pointers.push_back(host ? experts.tensor(i) : b.copies[i].data());
  }
  return b;
}
void finish_blocks(kernels::Ops& ops, ExpertStorage& experts, const HostBlocks& b) {
  if (ops.backend() == kernels::Backend::CPU) return;
  for (std::size_t i = 0; i < experts.tensor_count(); ++i) experts.tensors[i].upload(b.copies[i]);
}

// A parameter group (the model's, or one optimizer state set): the replicated tensors,
// written by rank 0, and this rank's experts. HDF5 reads and writes host memory: a GPU
// layer's buffers travel through host copies.
void write_group(Communicator& comm, hid_t file, const MOEConfig& c, const std::string& prefix, kernels::Ops& ops, ParameterSet& set,
                 std::int64_t first, bool writes_replicated) {
  const HostView gate = host_view(ops, set.gate.data(), static_cast<std::int64_t>(set.gate.size()));
  write_replicated(comm, file, checkpoint::gate_dataset(prefix),
                   {static_cast<hsize_t>(c.hidden_dim), static_cast<hsize_t>(c.num_experts)}, gate.data,
                   writes_replicated);
  write_experts(comm, file, ops, checkpoint::experts_group(prefix), set.experts, c.num_experts, first);
  if (c.shared_expert_dim > 0) {
    std::vector<float> flat(static_cast<std::size_t>(c.shared_expert_param_count()));
    set.shared.copy_to_flat(0, flat.data());
    const ExpertLayout& layout = set.shared.layout;
    std::vector<float> packed;
    for (const ExpertDatasetSpec& d : layout.datasets) {
      const float* data = packed_dataset(layout, d, flat.data() + layout.flat_offset(d.tensor), 1, packed);
      write_replicated(comm, file, checkpoint::shared_group(prefix) + "/" + d.name, dims_of(d.shape), data,
                       writes_replicated);
    }
  }
  if (c.shared_gate) {
    const HostView g = host_view(ops, set.shared_gate.data(), c.hidden_dim);
    write_replicated(comm, file, checkpoint::shared_gate_dataset(prefix), {static_cast<hsize_t>(c.hidden_dim)}, g.data,
                     writes_replicated);
  }
}

std::string read_group(hid_t file, const MOEConfig& c, const std::string& prefix, kernels::Ops& ops,
                       ParameterSet& set, std::int64_t first) {
  std::string error;
  auto keep = [&](const std::string& e) {
    if (error.empty()) error = e;
  };
  std::vector<float> host(set.gate.size());
  keep(read_whole(file, checkpoint::gate_dataset(prefix), host.data()));
  set.gate.upload(host);
  HostBlocks blocks = host_blocks(ops, set.experts);
  keep(read_experts(file, set.experts.layout, checkpoint::experts_group(prefix), first, set.experts.experts,
                    blocks.pointers));
  finish_blocks(ops, set.experts, blocks);
  if (c.shared_expert_dim > 0) {
    host.assign(static_cast<std::size_t>(c.shared_expert_param_count()), 0.0f);
    keep(read_single_expert(file, set.shared.layout, checkpoint::shared_group(prefix), host.data()));
    set.shared.copy_from_flat(0, host.data());
  }
  if (c.shared_gate) {
    host.assign(static_cast<std::size_t>(c.hidden_dim), 0.0f);
    keep(read_whole(file, checkpoint::shared_gate_dataset(prefix), host.data()));
    set.shared_gate.upload(host);
  }
  return error;
}

constexpr const char* kOptimizer = "/optimizer";
constexpr const char* kTraining = "/training";

void write_optimizer(Communicator& comm, hid_t file, const MOEConfig& c, kernels::Ops& ops, Optimizer& optimizer, std::int64_t first,
                     bool rank_zero) {
  hdf5::collectively(comm, [&] {
    Handle group = hdf5::create_group(file, kOptimizer);
    hdf5::write_attribute(group.get(), "type", std::string(optimizer_name(optimizer.type())));
    hdf5::write_attribute(group.get(), "step", optimizer.step_count());
    for (const auto& [name, value] : detail::OptimizerAccess::hyperparameters(optimizer))
      hdf5::write_attribute(group.get(), name, value);
    group.close();
  });
  for (const detail::OptimizerState& s : detail::OptimizerAccess::state(optimizer))
    write_group(comm, file, c, std::string(kOptimizer) + "/" + s.name, ops, *s.values, first, rank_zero);
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
  // Values a training run would divide by or raise to a power: a bad one would write
  // NaN weights (issue 10: a negative step did, and the run saved them with exit 0).
  const std::int64_t steps = hdf5::read_int64_attribute(group.get(), "step");
  MOE_CHECK_ARG(steps >= 0, "load_checkpoint", "'", path, "': /optimizer step = ", steps, "; expected >= 0");
  for (const auto& [name, unused] : detail::OptimizerAccess::hyperparameters(optimizer)) {
    const double v = hdf5::read_float64_attribute(group.get(), name);
    const bool unit = name == "beta1" || name == "beta2" || name == "momentum";
    const bool positive = name == "lr" || name == "eps";
    MOE_CHECK_ARG(std::isfinite(v) && (unit ? v >= 0 && v < 1 : positive ? v > 0 : v >= 0), "load_checkpoint", "'",
                  path, "': /optimizer ", name, " = ", v, "; expected ",
                  unit ? "a value in [0, 1)" : positive ? "a finite value > 0" : "a finite value >= 0");
  }
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
    const std::string e = read_group(file, c, std::string(kOptimizer) + "/" + s.name, ops, *s.values, first);
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

// About how many bytes a save of `layer` (and its optimizer's state) writes: the whole
// model, whatever the rank, since the file holds every expert.
std::int64_t checkpoint_bytes(const MoELayer& layer, Optimizer* optimizer) {
  const MOEConfig& c = layer.config();
  const double values = double(c.num_experts) * double(c.expert_param_count()) +
                        double(c.hidden_dim) * double(c.num_experts) + double(c.shared_expert_param_count()) +
                        double(c.hidden_dim) + double(c.num_experts);
  const double sets = 1.0 + (optimizer ? double(detail::OptimizerAccess::state(*optimizer).size()) : 0.0);
  return static_cast<std::int64_t>(4.0 * values * sets);
}

}  // namespace

namespace {

void save_from_the_group(const std::string& path, const MoELayer& layer, std::int64_t step, Optimizer* optimizer,
                         const TrainingAttributes& training) {
  Communicator& comm = layer.communicator();
  const MOEConfig& c = layer.config();
  checkpoint::check_on_rank_zero(comm, [&] {
    MOE_CHECK_ARG(!optimizer || &detail::OptimizerAccess::layer(*optimizer) == &layer, "save_checkpoint",
                  "the optimizer given updates another layer");
  });
  checkpoint::PendingFile pending(comm, path, checkpoint_bytes(layer, optimizer));
  {
    Handle file;
    hdf5::collectively(comm, [&] {
      file = hdf5::create_file(pending.temporary(), checkpoint::hdf5_communicator(comm), true);
      checkpoint::write_config_attributes(file.get(), c, step);
    });
    pending.reserve_space();
    MoELayer& mutable_layer = const_cast<MoELayer&>(layer);  // reads only; the accessors are not const
    kernels::Ops& ops = detail::LayerAccess::ops(mutable_layer);
    write_group(comm, file.get(), c, "", ops, detail::LayerAccess::params(mutable_layer), layer.first_local_expert(),
                comm.rank() == 0);
    if (c.has_expert_bias_vector())
      write_replicated(comm, file.get(), checkpoint::kExpertBiasDataset, {static_cast<hsize_t>(c.num_experts)},
                       detail::LayerAccess::host_expert_bias(mutable_layer).data(), comm.rank() == 0);
    if (optimizer) write_optimizer(comm, file.get(), c, ops, *optimizer, layer.first_local_expert(), comm.rank() == 0);
    if (!training.empty()) {
      hdf5::collectively(comm, [&] {
        Handle group = hdf5::create_group(file.get(), kTraining);
        for (const auto& [name, value] : training) hdf5::write_attribute(group.get(), name, value);
        group.close();
      });
    }
    hdf5::collectively(comm, [&] { file.close(); });
  }
  pending.commit();
}

}  // namespace

// With replicas (docs/design.md §2) the first expert group holds every expert once and
// writes the file; the others wait for its outcome, so that every rank returns after
// the file is complete, or throws with the writers' error.
void save_checkpoint(const std::string& path, const MoELayer& layer, std::int64_t step, Optimizer* optimizer,
                     const TrainingAttributes& training) {
  Communicator* replicas = layer.replica_communicator();
  if (!replicas) return save_from_the_group(path, layer, step, optimizer, training);
  std::string error;
  if (replicas->rank() == 0) {
    try {
      save_from_the_group(path, layer, step, optimizer, training);
    } catch (const Error& e) {
      error = e.what();
    }
  }
  share_error(*replicas, error);
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
    const std::int64_t file_step = checkpoint::read_step(file.get());
    MOE_CHECK_ARG(file_step >= 0, "load_checkpoint", "'", path, "' holds step = ", file_step, "; expected >= 0");
    checkpoint::check_datasets(file.get(), c, path);
    if (optimizer) check_optimizer(file.get(), c, *optimizer, path);
  });
  std::int64_t step = 0;
  std::string error;
  {
    Handle file = hdf5::open_file(path, false, checkpoint::hdf5_communicator(comm));
    step = checkpoint::read_step(file.get());
    kernels::Ops& ops = detail::LayerAccess::ops(layer);
    error = read_group(file.get(), c, "", ops, detail::LayerAccess::params(layer), layer.first_local_expert());
    if (c.has_expert_bias_vector()) {
      std::vector<float>& bias = detail::LayerAccess::host_expert_bias(layer);
      const std::string bias_error = read_whole(file.get(), checkpoint::kExpertBiasDataset, bias.data());
      if (error.empty()) error = bias_error;
      detail::LayerAccess::expert_bias(layer).upload(bias);
    }
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
  auto check_read = [&] { MOE_CHECK_ARG(error.empty(), "load_checkpoint", "'", path, "': ", error); };
  Communicator* replicas = layer.replica_communicator();
  if (!replicas) {
    collective_check(comm, check_read);
    return step;
  }
  // Every group read the file; a group that failed fails its replicas too.
  std::string verdict;
  try {
    collective_check(comm, check_read);
  } catch (const Error& e) {
    verdict = e.what();
  }
  share_error(*replicas, verdict);
  return step;
}

MOEConfig read_checkpoint_config(const std::string& path) {
  Handle file = open_checkpoint(path);
  MOEConfig config = checkpoint::read_config_attributes(file.get(), path);
  // The datasets must have the shapes the attributes claim before anyone allocates a
  // layer of that size (a 0.6 MB file claiming hidden_dim = 262144 made moe infer
  // allocate 4.7 GB before failing).
  checkpoint::check_datasets(file.get(), config, path);
  return config;
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

// One routed expert as a flat tensor.
std::string read_flat_expert(hid_t file, const ExpertLayout& layout, std::int64_t e, float* flat) {
  std::vector<float*> tensors;
  for (std::size_t i = 0; i < layout.tensors.size(); ++i) tensors.push_back(flat + layout.flat_offset(static_cast<int>(i)));
  return read_experts(file, layout, checkpoint::experts_group(), e, 1, tensors);
}

ReferenceModel load_reference_model(const std::string& path) {
  const CheckedFile checked = open_checked(path);
  const Handle& file = checked.file;
  ReferenceModel model;
  model.config = checked.config;
  model.step = checked.step;
  const MOEConfig& c = model.config;
  const ExpertLayout layout = expert_layout(c);
  model.gate_weights = Tensor<FLOAT_TYPE>({c.hidden_dim, c.num_experts});
  std::string error = read_whole(file.get(), checkpoint::gate_dataset(), model.gate_weights.data());
  auto keep = [&](const std::string& e) {
    if (error.empty()) error = e;
  };
  for (std::int64_t e = 0; e < c.num_experts; ++e) {
    model.expert_params.emplace_back(std::vector<std::int64_t>{c.expert_param_count()});
    keep(read_flat_expert(file.get(), layout, e, model.expert_params.back().data()));
  }
  if (c.has_expert_bias_vector()) {
    model.expert_bias = Tensor<FLOAT_TYPE>({c.num_experts});
    keep(read_whole(file.get(), checkpoint::kExpertBiasDataset, model.expert_bias.data()));
  }
  if (c.shared_expert_dim > 0) {
    model.shared_expert_params = Tensor<FLOAT_TYPE>({c.shared_expert_param_count()});
    keep(read_single_expert(file.get(), shared_expert_layout(c), checkpoint::shared_group(),
                            model.shared_expert_params.data()));
  }
  if (c.shared_gate) {
    model.shared_gate_weights = Tensor<FLOAT_TYPE>({c.hidden_dim});
    keep(read_whole(file.get(), checkpoint::shared_gate_dataset(), model.shared_gate_weights.data()));
  }
  MOE_CHECK_ARG(error.empty(), "load_reference_model", "'", path, "': ", error);
  return model;
}

namespace {

double norm_of(const float* x, std::int64_t n) {
  double sum = 0;
  for (std::int64_t i = 0; i < n; ++i) sum += double(x[i]) * double(x[i]);
  return std::sqrt(sum);
}

}  // namespace

CheckpointSummary inspect_checkpoint(const std::string& path) {
  const CheckedFile checked = open_checked(path);
  const Handle& file = checked.file;
  CheckpointSummary summary;
  summary.config = checked.config;
  summary.step = checked.step;
  const MOEConfig& c = summary.config;
  summary.has_optimizer_state = hdf5::link_exists(file.get(), kOptimizer);
  const ExpertLayout layout = expert_layout(c);
  for (const ExpertDatasetSpec& d : layout.datasets) summary.expert_tensors.push_back(d.name);

  auto checksummed = [&](const std::string& name) {
    Handle dataset = hdf5::open_dataset(file.get(), name);
    return hdf5::has_fletcher32(dataset.get());
  };
  auto status = [](const std::string& error, bool has_checksum) {
    return !error.empty() ? TensorChecksum::Failed : has_checksum ? TensorChecksum::Verified : TensorChecksum::NotPresent;
  };
  bool experts_checksummed = true;
  for (const ExpertDatasetSpec& d : layout.datasets)
    experts_checksummed = experts_checksummed && checksummed(checkpoint::experts_group() + "/" + d.name);
  std::vector<float> flat(static_cast<std::size_t>(c.expert_param_count()));
  std::vector<float> packed;
  for (std::int64_t e = 0; e < c.num_experts; ++e) {
    ExpertSummary expert;
    expert.error = read_flat_expert(file.get(), layout, e, flat.data());
    expert.checksum = status(expert.error, experts_checksummed);
    if (expert.error.empty())  // never numbers for a tensor that could not be read
      for (const ExpertDatasetSpec& d : layout.datasets)
        expert.norms.push_back(norm_of(packed_dataset(layout, d, flat.data() + layout.flat_offset(d.tensor), 1, packed),
                                       d.count()));
    summary.experts.push_back(std::move(expert));
  }
  // The replicated tensors, each read whole.
  auto add_tensor = [&](const std::string& name, std::int64_t count) {
    std::vector<float> values(static_cast<std::size_t>(count));
    TensorSummary t;
    t.name = name;
    t.error = read_whole(file.get(), name, values.data());
    t.checksum = status(t.error, checksummed(name));
    if (t.error.empty()) t.norm = norm_of(values.data(), count);
    summary.tensors.push_back(std::move(t));
  };
  add_tensor(checkpoint::gate_dataset(), c.hidden_dim * c.num_experts);
  if (c.has_expert_bias_vector()) add_tensor(checkpoint::kExpertBiasDataset, c.num_experts);
  if (c.shared_expert_dim > 0)
    for (const ExpertDatasetSpec& d : shared_expert_layout(c).datasets)
      add_tensor(checkpoint::shared_group() + "/" + d.name, d.count());
  if (c.shared_gate) add_tensor(checkpoint::shared_gate_dataset(), c.hidden_dim);
  return summary;
}

}  // namespace moe
