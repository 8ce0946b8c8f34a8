// Files that appear under their name only when complete: write to a unique temporary
// name, then (on one rank, after every rank has closed it) flush it to disk and rename
// it; and the checks that keep a write from destroying what is already there.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "moe/communicator.hpp"

namespace moe::checkpoint {

// Throws unless `path` can be written: its directory exists and is writable, and it is
// not an existing directory, device, FIFO or other non-regular file (replacing one of
// those by a regular file would lose it: `--output /dev/null` as root).
void check_writable_destination(const std::string& path);

// Throws unless `output` differs from every one of `inputs` (the same device and inode
// means the same file, whatever the path): writing it would destroy an input.
void check_not_an_input(const std::string& output, const std::vector<std::pair<std::string, std::string>>& inputs);

// A file being written under a temporary name and renamed to `path` when complete.
// Collective over `comm`. The temporary name is unique to this write (the ranks agree
// on it) and created exclusively; rank 0 holds an advisory lock on the target while
// writing, so a second job writing the same path fails with "another job is writing".
// If the writer is destroyed without commit() (an error), the temporary file is
// removed and the previous file at `path` is untouched.
class PendingFile {
 public:
  // `expected_bytes`: about what will be written; a file system with less free space
  // is an error before anything is written (0: no check).
  PendingFile(Communicator& comm, const std::string& path, std::int64_t expected_bytes = 0);
  ~PendingFile();
  PendingFile(const PendingFile&) = delete;
  PendingFile& operator=(const PendingFile&) = delete;

  const std::string& temporary() const { return temporary_; }
  // Collective, after the temporary file is created: rank 0 reserves the expected
  // bytes on disk (fallocate), so that a full disk is one agreed error here, before
  // any collective write, instead of a write failing on some ranks in the middle of
  // parallel HDF5's collective calls (where the others would wait forever). HDF5
  // does not give the excess back, so commit() truncates the file to HDF5's end of
  // allocation. A file system without fallocate is not reserved on.
  void reserve_space();
  // Collective: after every rank has closed the file, rank 0 flushes it, renames it
  // to `path`, flushes the directory and releases the lock; every rank throws if that
  // failed.
  void commit();

 private:
  Communicator& comm_;
  std::string path_, temporary_, lock_path_;
  std::int64_t expected_bytes_ = 0;
  int lock_fd_ = -1;      // rank 0
  bool reserved_ = false;  // rank 0: the file was made longer than HDF5 will use
  bool committed_ = false;
};

// Collective: throws on every rank if `check` throws on rank 0 (checks that read a
// file once rather than on every rank).
void check_on_rank_zero(Communicator& comm, const std::function<void()>& check);

// The communicator to give parallel HDF5 (null: open with the POSIX driver).
const Communicator* hdf5_communicator(const Communicator& comm);

}  // namespace moe::checkpoint
