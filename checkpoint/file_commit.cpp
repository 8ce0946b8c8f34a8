#include "checkpoint/file_commit.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "checkpoint/detail/hdf5.hpp"
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

void check_writable_destination(const std::string& path) {
  const std::string dir = directory_of(path);
  MOE_CHECK_ARG(std::filesystem::is_directory(dir), "checkpoint", "cannot write '", path, "': the directory '", dir,
                "' does not exist");
  MOE_CHECK_ARG(::access(dir.c_str(), W_OK) == 0, "checkpoint", "cannot write '", path, "': the directory '", dir,
                "' is not writable");
  MOE_CHECK_ARG(!std::filesystem::is_directory(path), "checkpoint", "cannot write '", path, "': it is a directory");
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  MOE_CHECK_ARG(!std::filesystem::exists(status) || std::filesystem::is_regular_file(status), "checkpoint",
                "refusing to write '", path, "': it exists and is not a regular file (",
                std::filesystem::is_character_file(status) ? "a character device"
                : std::filesystem::is_block_file(status)   ? "a block device"
                : std::filesystem::is_fifo(status)         ? "a FIFO"
                : std::filesystem::is_socket(status)       ? "a socket"
                                                           : "not a plain file",
                "); writing would replace it");
}

void check_not_an_input(const std::string& output, const std::vector<std::pair<std::string, std::string>>& inputs) {
  struct stat out {};
  if (::stat(output.c_str(), &out) != 0) return;  // a new file cannot be an input
  for (const auto& [option, input] : inputs) {
    struct stat in {};
    MOE_CHECK_ARG(::stat(input.c_str(), &in) != 0 || in.st_dev != out.st_dev || in.st_ino != out.st_ino, "output",
                  "'", output, "' is the same file as ", option, " '", input,
                  "'; writing it would destroy the input: choose another output path");
  }
}

namespace {

// The bytes reserved: the estimate and a margin for HDF5's metadata and chunk indexes.
std::int64_t reserved_bytes(std::int64_t expected) { return expected + expected / 50 + (std::int64_t{1} << 20); }

// 64 random bits from the kernel, for a temporary name no other writer picks.
std::uint64_t random_bits() {
  std::uint64_t value = 0;
  const int fd = ::open("/dev/urandom", O_RDONLY);
  if (fd >= 0) {
    if (::read(fd, &value, sizeof value) != static_cast<ssize_t>(sizeof value)) value = 0;
    ::close(fd);
  }
  return value ^ (static_cast<std::uint64_t>(::getpid()) << 32) ^ static_cast<std::uint64_t>(std::time(nullptr));
}

// Bytes an unprivileged writer may still allocate under `directory`; a file system
// that cannot say counts as unlimited.
double free_bytes_under(const std::string& directory) {
  struct statvfs fs {};
  if (::statvfs(directory.c_str(), &fs) != 0) return 1e300;
  return double(fs.f_bavail) * double(fs.f_frsize);
}

}  // namespace

PendingFile::PendingFile(Communicator& comm, const std::string& path, std::int64_t expected_bytes)
    : comm_(comm), path_(path), lock_path_(path + ".moe-lock"), expected_bytes_(expected_bytes) {
  std::int64_t token = 0;
  check_on_rank_zero(comm_, [&] {
    check_writable_destination(path_);
    if (expected_bytes > 0) {
      // Room for the file and a margin for HDF5's metadata and chunk indexes.
      const double free_bytes = free_bytes_under(directory_of(path_));
      const double needed = double(reserved_bytes(expected_bytes));
      MOE_CHECK_ARG(needed <= free_bytes, "checkpoint", "not enough space to write '", path_, "': it needs about ",
                    needed / 1e6, " MB and ", directory_of(path_), " has ", free_bytes / 1e6, " MB free");
    }
    // Lock, then check that the lock file is still the one at its name (a finishing
    // writer unlinks it): otherwise two writers could each hold a different inode.
    for (int attempt = 0; attempt < 100 && lock_fd_ < 0; ++attempt) {
      const int fd = ::open(lock_path_.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
      MOE_CHECK_ARG(fd >= 0, "checkpoint", "cannot create the lock file '", lock_path_, "': ", std::strerror(errno));
      if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        const int saved = errno;
        ::close(fd);
        MOE_CHECK_ARG(saved != EWOULDBLOCK, "checkpoint", "another job is writing '", path_, "' (it holds the lock '",
                      lock_path_, "'); wait for it or choose another path");
        detail::fail("checkpoint", "cannot lock '", lock_path_, "': ", std::strerror(saved));
      }
      struct stat held {}, named {};
      if (::fstat(fd, &held) == 0 && ::stat(lock_path_.c_str(), &named) == 0 && held.st_ino == named.st_ino &&
          held.st_dev == named.st_dev) {
        lock_fd_ = fd;
      } else {
        ::close(fd);
      }
    }
    MOE_CHECK_ARG(lock_fd_ >= 0, "checkpoint", "cannot hold the lock '", lock_path_, "'");
    // Holding the lock, no other writer of this path is alive: a temporary file left by
    // one that was killed is garbage.
    const std::filesystem::path target(path_);
    const std::string prefix = target.filename().string() + ".moe-tmp-";
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(directory_of(path_), ec))
      if (entry.path().filename().string().rfind(prefix, 0) == 0) std::filesystem::remove(entry.path(), ec);
    token = static_cast<std::int64_t>(random_bits() & 0x7fffffffffffffffull);
  });
  comm_.all_reduce(&token, 1, DataType::Int64, ReduceOp::Sum);  // rank 0's token, to every rank
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, ".moe-tmp-%016llx", static_cast<unsigned long long>(token));
  temporary_ = path_ + suffix;
}

void PendingFile::reserve_space() {
  if (expected_bytes_ <= 0) return;
  check_on_rank_zero(comm_, [&] {
    const int fd = ::open(temporary_.c_str(), O_WRONLY | O_CLOEXEC);
    MOE_CHECK_ARG(fd >= 0, "checkpoint", "cannot open '", temporary_, "' to reserve space: ", std::strerror(errno));
    const off_t wanted = static_cast<off_t>(reserved_bytes(expected_bytes_));
    struct stat before {};  // HDF5 may have written its header: a retry keeps it
    const bool can_retry = ::fstat(fd, &before) == 0;
    int rc = 0, saved = 0;
    // Two writers reserving at the same moment can both fail although either alone
    // fits: while one allocates, the other's partial allocation is held (tmpfs gives
    // it back only when its call fails). A failure while the free space would now hold
    // the reservation was such a race, so give back this attempt's blocks and try
    // again after a random pause; the next attempt fails for good if the disk is full.
    for (int attempt = 0;; ++attempt) {
      rc = ::fallocate(fd, 0, 0, wanted);
      saved = errno;
      if (rc == 0 || saved != ENOSPC || !can_retry || attempt == 50) break;
      if (::ftruncate(fd, before.st_size) != 0) break;
      if (free_bytes_under(directory_of(temporary_)) < double(wanted)) break;
      ::usleep(static_cast<useconds_t>(2000 + random_bits() % 30000));
    }
    ::close(fd);
    MOE_CHECK_ARG(rc == 0 || saved == EOPNOTSUPP || saved == ENOSYS, "checkpoint", "cannot write '", path_,
                  "': reserving ", wanted, " bytes for it failed (", std::strerror(saved),
                  "); the previous file is untouched");
    reserved_ = rc == 0;
  });
}

PendingFile::~PendingFile() {
  if (!committed_ && comm_.rank() == 0) std::remove(temporary_.c_str());  // an error: leave no partial file
  if (lock_fd_ >= 0) {
    if (!committed_) ::unlink(lock_path_.c_str());
    ::close(lock_fd_);
  }
}

void PendingFile::commit() {
  comm_.barrier();  // every rank has closed the temporary file
  check_on_rank_zero(comm_, [&] {
    if (reserved_) {  // give back what the reservation held beyond the file's end
      const std::uint64_t end = hdf5::end_of_allocation(temporary_);
      MOE_CHECK_ARG(::truncate(temporary_.c_str(), static_cast<off_t>(end)) == 0, "commit_file", "truncating '",
                    temporary_, "' to ", end, " bytes failed: ", std::strerror(errno));
    }
    sync_to_disk(temporary_, false);
    MOE_CHECK_ARG(std::rename(temporary_.c_str(), path_.c_str()) == 0, "commit_file", "renaming '", temporary_,
                  "' to '", path_, "' failed: ", std::strerror(errno));
    sync_to_disk(directory_of(path_), true);
  });
  committed_ = true;
  if (lock_fd_ >= 0) {
    ::unlink(lock_path_.c_str());
    ::close(lock_fd_);
    lock_fd_ = -1;
  }
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
