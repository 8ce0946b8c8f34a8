// Files that appear under their name only when complete: write to a temporary name,
// then (on one rank, after every rank has closed it) flush it to disk and rename it.
#pragma once

#include <functional>
#include <string>

#include "moe/communicator.hpp"

namespace moe::checkpoint {

// "<path>.moe-tmp": where a file is written before it is committed.
std::string temporary_path(const std::string& path);

// Throws unless the directory that will hold `path` exists and is writable.
void check_writable_destination(const std::string& path);

// Collective: after a barrier, rank 0 fsyncs the temporary file, renames it to
// `path` and fsyncs the directory; every rank throws if that failed.
void commit_file(Communicator& comm, const std::string& path);

// Collective: throws on every rank if `check` throws on rank 0 (checks that read a
// file once rather than on every rank).
void check_on_rank_zero(Communicator& comm, const std::function<void()>& check);

// The communicator to give parallel HDF5 (null: open with the POSIX driver).
const Communicator* hdf5_communicator(const Communicator& comm);

}  // namespace moe::checkpoint
