#include "checkpoint/file_commit.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "collective_check.hpp"
#include "moe/error.hpp"

namespace moe::checkpoint {
namespace {

std::string directory_of(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

// fsync of a file or directory by name; a failure to open is reported, not ignored.
void sync_to_disk(const std::string& name, bool directory) {
  const int fd = ::open(name.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  MOE_CHECK_ARG(fd >= 0, "commit_file", "cannot open '", name, "' to flush it: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  // Some file systems do not support fsync on directories (EINVAL): nothing to do.
  MOE_CHECK_ARG(rc == 0 || (directory && saved == EINVAL), "commit_file", "fsync('", name, "') failed: ",
                std::strerror(saved));
}

}  // namespace

std::string temporary_path(const std::string& path) { return path + ".moe-tmp"; }

void check_writable_destination(const std::string& path) {
  const std::string dir = directory_of(path);
  MOE_CHECK_ARG(std::filesystem::is_directory(dir), "checkpoint", "cannot write '", path, "': the directory '", dir,
                "' does not exist");
  MOE_CHECK_ARG(::access(dir.c_str(), W_OK) == 0, "checkpoint", "cannot write '", path, "': the directory '", dir,
                "' is not writable");
  MOE_CHECK_ARG(!std::filesystem::is_directory(path), "checkpoint", "cannot write '", path, "': it is a directory");
}

void commit_file(Communicator& comm, const std::string& path) {
  comm.barrier();  // every rank has closed the temporary file
  check_on_rank_zero(comm, [&] {
    const std::string tmp = temporary_path(path);
    sync_to_disk(tmp, false);
    MOE_CHECK_ARG(std::rename(tmp.c_str(), path.c_str()) == 0, "commit_file", "renaming '", tmp, "' to '", path,
                  "' failed: ", std::strerror(errno));
    sync_to_disk(directory_of(path), true);
  });
}

void check_on_rank_zero(Communicator& comm, const std::function<void()>& check) {
  collective_check(comm, [&] {
    if (comm.rank() == 0) check();
  });
}

const Communicator* hdf5_communicator(const Communicator& comm) {
  return comm.native_handle() ? &comm : nullptr;
}

}  // namespace moe::checkpoint
