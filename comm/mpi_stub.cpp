// Built when MPI is not (MOE_WITH_MPI=OFF): the Local backend still works.
#include "comm/backends.hpp"
#include "moe/error.hpp"

namespace moe::comm {

std::unique_ptr<Communicator> make_mpi_world() {
  detail::fail("make_communicator", "backend = mpi, but this moe was built without MPI (MOE_WITH_MPI=OFF)");
}
bool mpi_launch_detected() { return false; }

}  // namespace moe::comm
