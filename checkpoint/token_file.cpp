#include "checkpoint/token_file.hpp"

#include <filesystem>

#include "checkpoint/detail/hdf5.hpp"
#include "checkpoint/file_commit.hpp"
#include "collective_check.hpp"
#include "moe/error.hpp"

namespace moe::checkpoint {
namespace {

using hdf5::Dims;
using hdf5::Handle;

constexpr const char* kTokens = "/tokens";

Dims to_dims(const std::vector<std::int64_t>& shape) { return Dims(shape.begin(), shape.end()); }

// Writes rows [begin, end) of a dataset whose rows are its leading dimensions flattened.
// Collective over `comm`, failures agreed (hdf5::collectively).
void write_rows(Communicator& comm, hid_t file, const char* name, hid_t file_type, hid_t memory_type, const Dims& dims,
                std::int64_t begin, std::int64_t end, const void* data) {
  hdf5::collectively(comm, [&] {
    Handle dataset = hdf5::create_dataset(file, name, file_type, dims);
    // An empty dataset has no storage address: even a collective write that selects
    // nothing fails on it ("addr overflow"). Every rank sees the same dims, so every
    // rank skips alike.
    hsize_t elements = 1;
    for (hsize_t d : dims) elements *= d;
    if (elements == 0) return;
    Handle file_space = hdf5::dataspace(dims);
    hdf5::select_flat_rows(file_space.get(), dims, static_cast<hsize_t>(begin), static_cast<hsize_t>(end));
    hsize_t width = dims.back();
    Handle memory = hdf5::dataspace({static_cast<hsize_t>(end - begin) * width});
    if (end == begin) hdf5::select_none(memory.get());
    hdf5::write(dataset.get(), memory_type, memory.get(), file_space.get(), data, true);
  });
}

// One element per rank of a [P] dataset.
void write_per_rank(Communicator& comm, hid_t file, const char* name, hid_t file_type, hid_t memory_type,
                    const void* value) {
  hdf5::collectively(comm, [&] {
    const Dims dims{static_cast<hsize_t>(comm.size())};
    Handle dataset = hdf5::create_dataset(file, name, file_type, dims);
    Handle file_space = hdf5::dataspace(dims);
    hdf5::select_boxes(file_space.get(), {static_cast<hsize_t>(comm.rank())}, {}, {1}, {}, true);
    Handle memory = hdf5::dataspace({1});
    hdf5::write(dataset.get(), memory_type, memory.get(), file_space.get(), value, true);
  });
}

}  // namespace

TokenBlock read_token_block(const std::string& path, Communicator& comm, std::int64_t hidden_dim) {
  TokenBlock block;
  std::vector<std::int64_t> shape;
  check_on_rank_zero(comm, [&] {
    MOE_CHECK_ARG(std::filesystem::exists(path), "tokens", "'", path, "' does not exist");
    MOE_CHECK_ARG(hdf5::is_hdf5_file(path), "tokens", "'", path, "' is not an HDF5 file");
    Handle file = hdf5::open_file(path, false, nullptr);
    MOE_CHECK_ARG(hdf5::link_exists(file.get(), kTokens), "tokens", "'", path,
                  "' has no dataset /tokens (expected float32 [T, H] or [B, S, H])");
    Handle dataset = hdf5::open_dataset(file.get(), kTokens);
    const Dims dims = hdf5::dataset_dims(dataset.get());
    MOE_CHECK_ARG((dims.size() == 2 || dims.size() == 3) && dims.back() == static_cast<hsize_t>(hidden_dim),
                  "tokens", "'", path, "': /tokens has shape ", shape_to_string({dims.begin(), dims.end()}),
                  "; expected [T, ", hidden_dim, "] or [B, S, ", hidden_dim, "] (the checkpoint's hidden_dim)");
    MOE_CHECK_ARG(hdf5::is_floating(dataset.get()), "tokens", "'", path, "': /tokens is not floating point");
  });
  // Every rank now knows the file is good; share its shape rather than reopen it serially.
  std::int64_t rank_count = 0;
  std::int64_t dims[3] = {0, 0, 0};
  if (comm.rank() == 0) {
    Handle file = hdf5::open_file(path, false, nullptr);
    Handle dataset = hdf5::open_dataset(file.get(), kTokens);
    const Dims d = hdf5::dataset_dims(dataset.get());
    rank_count = static_cast<std::int64_t>(d.size());
    for (std::size_t i = 0; i < d.size(); ++i) dims[i] = static_cast<std::int64_t>(d[i]);
  }
  comm.broadcast(&rank_count, sizeof rank_count, 0);
  comm.broadcast(dims, sizeof dims, 0);
  block.file_shape.assign(dims, dims + rank_count);
  block.total_rows = rank_count == 2 ? dims[0] : dims[0] * dims[1];
  const std::int64_t P = comm.size(), r = comm.rank();
  block.row_begin = r * block.total_rows / P;
  block.row_end = (r + 1) * block.total_rows / P;
  block.rows = Tensor<FLOAT_TYPE>({block.row_end - block.row_begin, hidden_dim});

  std::string error;
  {
    Handle file = hdf5::open_file(path, false, hdf5_communicator(comm));
    {  // every object closed before the file: MPI-IO files refuse to close otherwise
      Handle dataset = hdf5::open_dataset(file.get(), kTokens);
      const Dims file_dims = to_dims(block.file_shape);
      Handle file_space = hdf5::dataspace(file_dims);
      hdf5::select_flat_rows(file_space.get(), file_dims, static_cast<hsize_t>(block.row_begin),
                             static_cast<hsize_t>(block.row_end));
      Handle memory = hdf5::dataspace({static_cast<hsize_t>(block.rows.numel())});
      if (block.rows.numel() == 0) hdf5::select_none(memory.get());
      try {
        hdf5::read(dataset.get(), H5T_NATIVE_FLOAT, memory.get(), file_space.get(), block.rows.data(), false);
      } catch (const Error& e) {
        error = e.what();
      }
    }
    file.close();
  }
  collective_check(comm, [&] { MOE_CHECK_ARG(error.empty(), "tokens", "reading '", path, "' failed: ", error); });
  return block;
}

void write_token_file(const std::string& path, const Tensor<FLOAT_TYPE>& tokens) {
  MOE_CHECK_ARG(tokens.rank() == 2 || tokens.rank() == 3, "write_token_file", "tokens has shape ",
                shape_to_string(tokens.shape()), "; expected [T, H] or [B, S, H]");
  auto local = make_communicator(CommBackend::Local);
  PendingFile pending(*local, path, tokens.numel() * static_cast<std::int64_t>(sizeof(float)));
  {
    Handle file = hdf5::create_file(pending.temporary(), nullptr, true);
    {
      Handle dataset = hdf5::create_dataset(file.get(), kTokens, H5T_IEEE_F32LE, to_dims(tokens.shape()));
      hdf5::write(dataset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, tokens.data(), false);
    }
    file.close();
  }
  pending.commit();
}

void write_inference_output(const std::string& path, Communicator& comm, const TokenBlock& block,
                            const ForwardResult& result, std::int64_t top_k) {
  const auto T = static_cast<hsize_t>(block.total_rows), k = static_cast<hsize_t>(top_k);
  const auto bytes = static_cast<std::int64_t>(4 * (double(block.total_rows) * double(block.rows.shape().back()) +
                                                    2.0 * double(T) * double(k)));
  PendingFile pending(comm, path, bytes);
  {
    Handle file;
    hdf5::collectively(comm, [&] { file = hdf5::create_file(pending.temporary(), hdf5_communicator(comm), true); });
    pending.reserve_space();
    write_rows(comm, file.get(), "/output", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, to_dims(block.file_shape), block.row_begin,
               block.row_end, result.output.data());
    write_rows(comm, file.get(), "/expert_indices", H5T_STD_I32LE, H5T_NATIVE_INT32, {T, k}, block.row_begin,
               block.row_end, result.expert_indices.data());
    write_rows(comm, file.get(), "/expert_weights", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {T, k}, block.row_begin,
               block.row_end, result.expert_weights.data());
    const float aux = result.aux_loss;
    const std::int64_t dropped = result.stats.dropped;
    write_per_rank(comm, file.get(), "/aux_loss", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &aux);
    write_per_rank(comm, file.get(), "/dropped", H5T_STD_I64LE, H5T_NATIVE_INT64, &dropped);
    hdf5::collectively(comm, [&] { file.close(); });
  }
  pending.commit();
}

}  // namespace moe::checkpoint
