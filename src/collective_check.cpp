#include "collective_check.hpp"

#include <limits>
#include <string>

#include "moe/error.hpp"
#include "process_identity.hpp"

namespace moe {

void collective_check(Communicator& comm, const std::function<void()>& check) {
  std::string message;
  bool failed = false;
  try {
    check();
  } catch (const Error& e) {
    message = e.what();
    failed = true;
  }
  if (comm.size() == 1) {
    if (failed) throw CollectiveError(message);
    return;
  }
  std::int64_t first_failing = failed ? comm.rank() : std::numeric_limits<std::int64_t>::max();
  comm.all_reduce(&first_failing, 1, DataType::Int64, ReduceOp::Min);
  if (first_failing == std::numeric_limits<std::int64_t>::max()) return;

  const int root = static_cast<int>(first_failing);
  // The failing rank is named by its rank in the job (MPI_COMM_WORLD), which is what a
  // launcher's output shows, also when `comm` is a group split off the job.
  std::int64_t header[2] = {static_cast<std::int64_t>(message.size()),
                            detail::process_rank() >= 0 ? detail::process_rank() : comm.rank()};
  comm.broadcast(header, sizeof header, root);
  std::string root_message(static_cast<std::size_t>(header[0]), '\0');
  if (comm.rank() == root) root_message = message;
  comm.broadcast(root_message.data(), root_message.size(), root);
  if (failed) throw CollectiveError(message);
  throw CollectiveError("rank " + std::to_string(header[1]) + " failed: " + root_message);
}

void share_error(Communicator& comm, const std::string& error) {
  collective_check(comm, [&] {
    if (!error.empty()) throw Error(error);
  });
}

}  // namespace moe
