// Every HDF5 C call moe makes, wrapped once: RAII for ids, MOE_CHECK on every return
// code, and errors that carry HDF5's own error stack. The rest of checkpoint/ speaks
// only this vocabulary.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "moe/communicator.hpp"

namespace moe::hdf5 {

// An HDF5 id that closes itself (H5Fclose, H5Dclose, … chosen by the id's type).
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  ~Handle();
  Handle(Handle&& other) noexcept : id_(other.id_) { other.id_ = H5I_INVALID_HID; }
  Handle& operator=(Handle&& other) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t get() const { return id_; }
  // Closes now and reports a failure (a destructor can only log it).
  void close();

 private:
  hid_t id_ = H5I_INVALID_HID;
};

using Dims = std::vector<hsize_t>;

// Files. With a communicator whose native handle is an MPI_Comm the file is opened
// through MPI-IO (every rank of it must call); otherwise with the POSIX driver. A file
// opened for reading without a communicator, and one is_hdf5_file looks at, first has
// its metadata read in a child process (hdf5_probe.hpp).
bool is_hdf5_file(const std::string& path);
// exclusive: fail if the file exists (a writer's unique temporary file).
Handle create_file(const std::string& path, const Communicator* comm, bool exclusive = false);
Handle open_file(const std::string& path, bool writable, const Communicator* comm);

// Objects.
bool link_exists(hid_t location, const std::string& path);
Handle create_group(hid_t location, const std::string& name);
Handle open_group(hid_t location, const std::string& name);
Handle open_dataset(hid_t location, const std::string& path);
struct DatasetOptions {
  Dims chunk;               // empty: contiguous
  bool fletcher32 = false;  // checksum every chunk (needs chunk)
};
Handle create_dataset(hid_t location, const std::string& path, hid_t type, const Dims& dims,
                      const DatasetOptions& options = {});
Dims dataset_dims(hid_t dataset);
bool has_fletcher32(hid_t dataset);
bool is_float32(hid_t dataset);
bool is_floating(hid_t dataset);  // any IEEE float size
bool is_integer(hid_t dataset);

// Attributes (scalars; strings are variable-length UTF-8 when written, either kind
// when read).
bool attribute_exists(hid_t location, const std::string& name);
std::vector<std::string> attribute_names(hid_t location);
void write_attribute(hid_t location, const std::string& name, std::int64_t value);
void write_attribute(hid_t location, const std::string& name, double value);
void write_attribute(hid_t location, const std::string& name, const std::string& value);
std::int64_t read_int64_attribute(hid_t location, const std::string& name);
double read_float64_attribute(hid_t location, const std::string& name);
std::string read_string_attribute(hid_t location, const std::string& name);

// Selections: a dataspace of `dims`, with nothing or a union of boxes selected.
Handle dataspace(const Dims& dims);
void select_none(hid_t space);
// Adds (OR) the block [start, start + count) with the given stride and block sizes.
void select_boxes(hid_t space, const Dims& start, const Dims& stride, const Dims& count,
                  const Dims& block, bool first);
// The rows [row_begin, row_end) of a dataset whose rows are its first dimensions
// flattened (e.g. tokens of a [B, S, H] file): a union of at most three boxes.
void select_flat_rows(hid_t space, const Dims& dims, hsize_t row_begin, hsize_t row_end);

// Raw data. `collective` asks MPI-IO for a collective transfer (needed to write
// filtered datasets in parallel); otherwise each rank transfers independently.
void write(hid_t dataset, hid_t memory_type, hid_t memory_space, hid_t file_space, const void* data,
           bool collective);
void read(hid_t dataset, hid_t memory_type, hid_t memory_space, hid_t file_space, void* data,
          bool collective);

// Runs `io` — HDF5 calls that every rank of `comm` makes together, as parallel HDF5
// requires for creating objects and writing filtered data — and turns a failure on any
// rank (a full disk, an I/O error) into a moe::CollectiveError on every rank. A rank
// that failed alone and went on would leave the others waiting in the next collective
// call forever.
void collectively(Communicator& comm, const std::function<void()>& io);

// The end of the space HDF5 allocated in a closed file (its "end of allocation"): the
// length the file needs, when it has been made longer (a reservation).
std::uint64_t end_of_allocation(const std::string& path);

// Flushes the file's buffers to the operating system.
void flush(hid_t file);

}  // namespace moe::hdf5
