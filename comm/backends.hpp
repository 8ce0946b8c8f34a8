// The constructors behind make_communicator. Each backend lives in its own source;
// a backend that is not built is a stub source (chosen by CMake) whose functions
// throw a clear error, so only the factory needs to know what was built.
#pragma once

#include <memory>

#include "moe/communicator.hpp"

namespace moe::comm {

std::unique_ptr<Communicator> make_local();

// MPI_COMM_WORLD, initialising MPI if nobody has.
std::unique_ptr<Communicator> make_mpi_world();
// True when MPI is already initialised or this process was started by an MPI launcher.
bool mpi_launch_detected();

std::unique_ptr<Communicator> make_nccl();

}  // namespace moe::comm
