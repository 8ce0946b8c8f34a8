#include "checkpoint/detail/hdf5_probe.hpp"

#include <fcntl.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

#include "moe/error.hpp"

namespace moe::hdf5 {
namespace {

// A healthy checkpoint's metadata is read in milliseconds; a damaged one that loops
// in libhdf5's metadata cache never finishes. MOE_FILE_PROBE_SECONDS changes the limit
// (scripts/fuzz.sh shortens it below the fuzzer's own timeout).
std::chrono::seconds probe_time_limit() {
  constexpr long kDefaultSeconds = 30;
  const char* text = std::getenv("MOE_FILE_PROBE_SECONDS");
  if (!text || !*text) return std::chrono::seconds(kDefaultSeconds);
  char* end = nullptr;
  const long seconds = std::strtol(text, &end, 10);
  MOE_CHECK_ARG(*end == '\0' && seconds > 0 && seconds <= 86400, "MOE_FILE_PROBE_SECONDS",
                "MOE_FILE_PROBE_SECONDS = '", text, "'; expected a whole number of seconds in [1, 86400]");
  return std::chrono::seconds(seconds);
}

// Attributes larger than this are not read by moe (its attributes are scalars and
// short strings), and need not be by the probe.
constexpr hsize_t kLargestAttributeRead = hsize_t{1} << 20;

// ---- In the child: libhdf5 calls only, no exceptions, no OpenMP, no MPI. ----

herr_t read_attribute(hid_t location, const char* name, const H5A_info_t*, void*) {
  const hid_t attribute = H5Aopen(location, name, H5P_DEFAULT);
  if (attribute < 0) return 0;
  const hid_t type = H5Aget_type(attribute), space = H5Aget_space(attribute);
  const hssize_t count = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
  if (type >= 0 && count >= 0) {
    if (H5Tis_variable_str(type) > 0) {
      // moe's strings: through the global heap, where damage crashed libhdf5.
      const hid_t memory = H5Tcopy(H5T_C_S1);
      H5Tset_size(memory, H5T_VARIABLE);
      H5Tset_cset(memory, H5Tget_cset(type));
      if (static_cast<hsize_t>(count) <= kLargestAttributeRead / sizeof(char*)) {
        std::vector<char*> strings(static_cast<std::size_t>(count), nullptr);
        if (H5Aread(attribute, memory, strings.data()) >= 0) H5Dvlen_reclaim(memory, space, H5P_DEFAULT, strings.data());
      }
      H5Tclose(memory);
    } else {
      const hid_t native = H5Tget_native_type(type, H5T_DIR_ASCEND);
      const std::size_t size = native >= 0 ? H5Tget_size(native) : 0;
      if (size > 0 && static_cast<hsize_t>(count) * size <= kLargestAttributeRead && H5Tdetect_class(native, H5T_VLEN) <= 0) {
        std::vector<unsigned char> bytes(static_cast<std::size_t>(count) * size + 1);
        H5Aread(attribute, native, bytes.data());
      }
      if (native >= 0) H5Tclose(native);
    }
  }
  if (space >= 0) H5Sclose(space);
  if (type >= 0) H5Tclose(type);
  H5Aclose(attribute);
  return 0;
}

void read_attributes(hid_t object) {
  hsize_t at = 0;
  H5Aiterate2(object, H5_INDEX_NAME, H5_ITER_NATIVE, &at, read_attribute, nullptr);
}

// Type, shape and creation properties (layout, filters): what moe checks before it
// reads a dataset's data.
void read_dataset_header(hid_t dataset) {
  const hid_t type = H5Dget_type(dataset), space = H5Dget_space(dataset), dcpl = H5Dget_create_plist(dataset);
  if (space >= 0) H5Sget_simple_extent_npoints(space), H5Sclose(space);
  if (type >= 0) H5Tclose(type);
  if (dcpl >= 0) H5Pget_nfilters(dcpl), H5Pclose(dcpl);
}

void read_group(hid_t group, int depth);

// One link of a group: the object it names, whatever it is. Errors end this object
// only: the walk goes on with the next, so one damaged part does not hide the others
// (H5Ovisit gives up on the first object whose header it cannot classify).
herr_t read_linked_object(hid_t group, const char* name, const H5L_info_t*, void* depth) {
  const hid_t object = H5Oopen(group, name, H5P_DEFAULT);
  if (object < 0) return 0;
  read_attributes(object);
  switch (H5Iget_type(object)) {
    case H5I_GROUP: read_group(object, *static_cast<int*>(depth) + 1); break;
    case H5I_DATASET: read_dataset_header(object); break;
    default: break;
  }
  H5Oclose(object);
  return 0;
}

// The objects linked from a group (or from the root, through the file's id).
void read_group(hid_t group, int depth) {
  constexpr int kDeepest = 16;  // moe's files are two levels deep; a link cycle ends here
  if (depth > kDeepest) return;
  hsize_t at = 0;
  H5Literate(group, H5_INDEX_NAME, H5_ITER_NATIVE, &at, read_linked_object, &depth);
}

[[noreturn]] void probe_in_child(const char* path) {
  // Quiet: the parent reports. A crash here is the point of the child.
  const int null = ::open("/dev/null", O_WRONLY);
  if (null >= 0) ::dup2(null, STDOUT_FILENO), ::dup2(null, STDERR_FILENO);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file >= 0) {
    // The root through the file's own id, as moe's readers reach it: a root whose
    // header HDF5 cannot classify does not open as a group, but its attributes read.
    read_attributes(file);
    read_group(file, 0);
    H5Fclose(file);
  }
  ::_exit(0);  // no exit handlers: they belong to the parent's libraries
}

// ---- In the parent ----

using FileIdentity = std::tuple<dev_t, ino_t, off_t, std::int64_t, long>;

// The child's end: its status, or nothing when it was still running at the limit (it
// is then killed).
bool wait_for(pid_t child, std::chrono::seconds limit, int& status) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  auto pause = std::chrono::microseconds(200);
  for (;;) {
    const pid_t done = ::waitpid(child, &status, WNOHANG);
    if (done == child) return true;
    if (done < 0 && errno != EINTR) {
      status = 0;  // reaped by someone else (a SIGCHLD handler): nothing to report
      return true;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(child, SIGKILL);
      while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
      }
      return false;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(20000));
  }
}

// The files found damaged, with the damage: such a file is not read again in this
// process (a hang would cost the time limit at every open), its error is repeated. A
// file that passed is probed again at its next open: a rewrite that kept its size and
// time stamp (time stamps are coarse) must not skip the probe.
class DamagedFiles {
 public:
  std::string damage_of(const FileIdentity& id) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = damage_.find(id);
    return it == damage_.end() ? std::string() : it->second;
  }
  void add(const FileIdentity& id, const std::string& damage) {
    std::lock_guard<std::mutex> lock(mutex_);
    damage_[id] = damage;
  }

 private:
  std::mutex mutex_;
  std::map<FileIdentity, std::string> damage_;
};

DamagedFiles& damaged_files() {
  static DamagedFiles files;
  return files;
}

// The damage the child met, or "" when it read every header.
std::string damage_seen_by_child(pid_t child, std::chrono::seconds limit) {
  int status = 0;
  if (!wait_for(child, limit, status))
    return detail::concat("libhdf5 did not finish reading its metadata within ", limit.count(),
                          " s (in a separate process, which was stopped)");
  if (WIFSIGNALED(status))
    return detail::concat("libhdf5 crashed (", strsignal(WTERMSIG(status)), ") reading its metadata in a separate process");
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
    return detail::concat("libhdf5 crashed (exit status ", WEXITSTATUS(status),
                          ") reading its metadata in a separate process");
  return "";
}

}  // namespace

void probe_untrusted_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return;  // the caller's open reports it
  const FileIdentity id{st.st_dev, st.st_ino, st.st_size, static_cast<std::int64_t>(st.st_mtim.tv_sec),
                        st.st_mtim.tv_nsec};
  std::string damage = damaged_files().damage_of(id);
  if (damage.empty()) {
    const std::chrono::seconds limit = probe_time_limit();
    const pid_t child = ::fork();
    if (child < 0) return;  // no process to spare: read it in this one, as without the probe
    if (child == 0) probe_in_child(path.c_str());
    damage = damage_seen_by_child(child, limit);
    if (!damage.empty()) damaged_files().add(id, damage);
  }
  if (!damage.empty()) detail::fail("hdf5", "'", path, "' is damaged: ", damage, "; nothing was loaded");
}

}  // namespace moe::hdf5
