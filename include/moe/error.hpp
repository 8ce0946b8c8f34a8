// moe::Error, the one exception type the library throws, and the helpers that build
// its messages so every argument error reads the same way: the function, the
// argument, its value and what was expected.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace moe {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// An error that every rank of a communicator throws together (moe agreed on it with a
// collective before throwing), so each rank can leave its job cleanly. Any other
// moe::Error in a multi-rank job may have struck one rank only: end the job then with
// Communicator::abort, or the other ranks may wait forever in their next collective.
class CollectiveError : public Error {
 public:
  using Error::Error;
};

namespace detail {

template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

// Throws moe::Error("<where>: <message>").
template <class... Parts>
[[noreturn]] void fail(const char* where, Parts&&... parts) {
  throw Error(concat(where, ": ", std::forward<Parts>(parts)...));
}

// Thrown when a library call returns an error code (BLAS, MPI, HDF5, CUDA, NCCL):
// the library, the call as written, the error's name, file:line, rank and host.
[[noreturn]] void fail_call(const char* library, const char* call, const std::string& error_name,
                            const char* file, int line);

}  // namespace detail
}  // namespace moe

// Checks an argument; on failure throws moe::Error naming the function, then the
// message parts (which should name the argument, its value and what was expected).
#define MOE_CHECK_ARG(cond, where, ...)          \
  do {                                           \
    if (!(cond)) ::moe::detail::fail(where, __VA_ARGS__); \
  } while (0)
