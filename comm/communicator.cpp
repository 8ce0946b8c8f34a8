// The factory: the one place that knows which backends were built.
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

}  // namespace moe
