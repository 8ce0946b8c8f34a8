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

void write_gate(hid_t file, const MOEConfig& c, const float* gate, bool this_rank_writes) {
  const Dims dims{static_cast<hsize_t>(c.hidden_dim), static_cast<hsize_t>(c.num_experts)};
  Handle dataset = hdf5::create_dataset(file, checkpoint::kGateDataset, H5T_IEEE_F32LE, dims);
  Handle file_space = hdf5::dataspace(dims), memory = hdf5::dataspace(dims);
  if (!this_rank_writes) hdf5::select_none(file_space.get()), hdf5::select_none(memory.get());
  hdf5::write(dataset.get(), H5T_NATIVE_FLOAT, memory.get(), file_space.get(), gate, true);
}

// Writes this rank's experts [first, first + storage.experts) into the four expert
// datasets of `group`, chunked one expert per chunk with Fletcher32: one collective
// transfer per dataset, whose memory block has the shape of its file selection.
void write_experts(hid_t file, const MOEConfig& c, const std::string& group, const ExpertStorage& storage,
                   std::int64_t first) {
  int i = 0;
  for (const ExpertTensor& t : checkpoint::expert_tensors(c, group)) {
    const Dims dims = with_experts(static_cast<hsize_t>(c.num_experts), t.shape);
    hdf5::DatasetOptions options;
    options.chunk = with_experts(1, t.shape);
    options.fletcher32 = true;
    Handle dataset = hdf5::create_dataset(file, t.dataset, H5T_IEEE_F32LE, dims, options);
    Handle file_space = expert_slab(dims, first, storage.experts);
    Handle memory = hdf5::dataspace(with_experts(static_cast<hsize_t>(storage.experts), t.shape));
    // Collective: parallel HDF5 writes filtered (checksummed) chunks only that way.
    hdf5::write(dataset.get(), H5T_NATIVE_FLOAT, memory.get(), file_space.get(), storage.tensor(i++), true);
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

std::string read_gate(hid_t file, float* gate) {
  Handle dataset = hdf5::open_dataset(file, checkpoint::kGateDataset);
  try {
    hdf5::read(dataset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, gate, false);
  } catch (const Error& e) {
    return detail::concat("reading ", checkpoint::kGateDataset, " failed: ", e.what());
  }
  return {};
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

void save_checkpoint(const std::string& path, const MoELayer& layer, std::int64_t step) {
  Communicator& comm = layer.communicator();
  const MOEConfig& c = layer.config();
  checkpoint::check_on_rank_zero(comm, [&] { checkpoint::check_writable_destination(path); });
  {
    Handle file = hdf5::create_file(checkpoint::temporary_path(path), checkpoint::hdf5_communicator(comm));
    checkpoint::write_config_attributes(file.get(), c, step);
    write_gate(file.get(), c, detail::LayerAccess::gate(layer), comm.rank() == 0);
    write_experts(file.get(), c, "/experts", detail::LayerAccess::experts(layer), layer.first_local_expert());
    file.close();
  }
  checkpoint::commit_file(comm, path);
}

std::int64_t load_checkpoint(const std::string& path, MoELayer& layer) {
  Communicator& comm = layer.communicator();
  const MOEConfig& c = layer.config();
  // The file's metadata is checked once, on rank 0, and the verdict shared.
  checkpoint::check_on_rank_zero(comm, [&] {
    Handle file = open_checkpoint(path);
    checkpoint::check_same_config(checkpoint::read_config_attributes(file.get(), path), c, path);
    checkpoint::check_datasets(file.get(), c, path);
  });
  std::int64_t step = 0;
  std::string error;
  {
    Handle file = hdf5::open_file(path, false, checkpoint::hdf5_communicator(comm));
    step = checkpoint::read_step(file.get());
    error = read_gate(file.get(), detail::LayerAccess::gate(layer));
    ExpertStorage& storage = detail::LayerAccess::experts(layer);
    const std::string experts_error = read_experts(file.get(), c, "/experts", layer.first_local_expert(),
                                                   storage.experts, [&](int i) { return storage.tensor(i); });
    if (error.empty()) error = experts_error;
    file.close();
  }
  collective_check(comm, [&] { MOE_CHECK_ARG(error.empty(), "load_checkpoint", "'", path, "': ", error); });
  return step;
}

MOEConfig read_checkpoint_config(const std::string& path) {
  Handle file = open_checkpoint(path);
  return checkpoint::read_config_attributes(file.get(), path);
}

ReferenceModel load_reference_model(const std::string& path) {
  Handle file = open_checkpoint(path);
  ReferenceModel model;
  model.config = checkpoint::read_config_attributes(file.get(), path);
  const MOEConfig& c = model.config;
  checkpoint::check_datasets(file.get(), c, path);
  model.step = checkpoint::read_step(file.get());
  model.gate_weights = Tensor<FLOAT_TYPE>({c.hidden_dim, c.num_experts});
  std::string error = read_gate(file.get(), model.gate_weights.data());
  for (std::int64_t e = 0; e < c.num_experts; ++e) {
    model.expert_params.emplace_back(std::vector<std::int64_t>{c.expert_param_count()});
    const std::string expert_error = read_flat_expert(file.get(), c, e, model.expert_params.back().data());
    if (error.empty()) error = expert_error;
  }
  MOE_CHECK_ARG(error.empty(), "load_reference_model", "'", path, "': ", error);
  return model;
}

CheckpointSummary inspect_checkpoint(const std::string& path) {
  Handle file = open_checkpoint(path);
  CheckpointSummary summary;
  summary.config = checkpoint::read_config_attributes(file.get(), path);
  const MOEConfig& c = summary.config;
  checkpoint::check_datasets(file.get(), c, path);
  summary.step = checkpoint::read_step(file.get());
  summary.has_optimizer_state = hdf5::link_exists(file.get(), "/optimizer");

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
