// The MPI backend over a communicator the caller owns (a sub-communicator, say).
// Including this header needs MPI's include path; the rest of moe does not.
#pragma once

// moe uses MPI's C API only; skip the deprecated C++ bindings that would need libmpi_cxx.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <memory>

#include "moe/communicator.hpp"

namespace moe {

// moe duplicates `comm` (so its traffic never mixes with the caller's) and frees the
// duplicate when the returned object is destroyed; `comm` stays the caller's.
std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm);

}  // namespace moe
