// The factory: the one place that knows which backends were built.
#include <string>

#include "collective_check.hpp"
#include "comm/backends.hpp"
#include "moe/error.hpp"

namespace moe {

const char* comm_backend_name(CommBackend backend) {
  switch (backend) {
    case CommBackend::Auto: return "auto";
    case CommBackend::Local: return "local";
    case CommBackend::MPI: return "mpi";
    case CommBackend::NCCL: return "nccl";
  }
  return "unknown";
}

std::unique_ptr<Communicator> make_communicator(CommBackend backend) {
  switch (backend) {
    case CommBackend::Local:
      return comm::make_local();
    case CommBackend::MPI:
#if MOE_HAVE_MPI
      return comm::make_mpi_world();
#else
      detail::fail("make_communicator", "backend = mpi, but this moe was built without MPI (MOE_WITH_MPI=OFF)");
#endif
    case CommBackend::NCCL:
#if MOE_HAVE_NCCL
      return comm::make_nccl();
#else
      detail::fail("make_communicator", "backend = nccl, but this moe was built without NCCL");
#endif
    case CommBackend::Auto:
#if MOE_HAVE_MPI
      if (comm::mpi_launch_detected()) return comm::make_mpi_world();
#endif
      return comm::make_local();
  }
  detail::fail("make_communicator", "backend = ", static_cast<int>(backend), "; expected auto, local, mpi or nccl");
}

std::unique_ptr<Communicator> Communicator::split(int, int) {
  detail::fail("Communicator::split", "the ", comm_backend_name(backend()), " communicator cannot split");
}

ExpertParallelGroups split_expert_parallel(Communicator& world, int expert_parallel_size) {
  std::int64_t sizes[2] = {-expert_parallel_size, expert_parallel_size};  // -max and max
  world.all_reduce(sizes, 2, DataType::Int64, ReduceOp::Max);
  collective_check(world, [&] {
    MOE_CHECK_ARG(-sizes[0] == sizes[1], "split_expert_parallel", "expert_parallel_size ranges from ", -sizes[0],
                  " to ", sizes[1], " across the ", world.size(), " ranks; expected the same on every rank");
    MOE_CHECK_ARG(expert_parallel_size >= 1 && expert_parallel_size <= world.size() &&
                      world.size() % expert_parallel_size == 0,
                  "split_expert_parallel", "expert_parallel_size = ", expert_parallel_size, " with ", world.size(),
                  " ranks; expected a divisor of the number of ranks");
  });
  const int group = world.rank() / expert_parallel_size, position = world.rank() % expert_parallel_size;
  ExpertParallelGroups groups;
  groups.experts = world.split(group, position);
  groups.replicas = world.split(position, group);
  return groups;
}

}  // namespace moe
