#include "moe/error.hpp"

#include <unistd.h>

#include <climits>
#include <cstdint>
#include <vector>

#include "moe/tensor.hpp"
#include "process_identity.hpp"

namespace moe {

namespace detail {

void check_fits_in_memory(std::int64_t bytes, const std::string& what) {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page <= 0) return;  // unknown: let the allocation decide
  const double machine = double(pages) * double(page);
  MOE_CHECK_ARG(double(bytes) <= machine, "memory", "Failed to allocate memory for ", what, ": it needs ", bytes,
                " bytes (", double(bytes) / 1e9, " GB) and this machine has ", machine / 1e9, " GB");
}

}  // namespace detail

std::string shape_to_string(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

namespace detail {

namespace {
int g_rank = -1;
}

void set_process_rank(int rank) { g_rank = rank; }
int process_rank() { return g_rank; }

std::string host_name() {
  char name[HOST_NAME_MAX + 1] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "unknown-host";
  return name;
}

void fail_call(const char* library, const char* call, const std::string& error_name,
               const char* file, int line) {
  std::string where = g_rank >= 0 ? concat("rank ", g_rank, " on ", host_name())
                                  : concat("host ", host_name());
  throw Error(concat(library, " error ", error_name, " in ", call, " at ", file, ':', line, " (",
                     where, ")"));
}

}  // namespace detail
}  // namespace moe
