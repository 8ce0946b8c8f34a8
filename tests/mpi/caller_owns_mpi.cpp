// A caller that initialises MPI itself and hands moe a sub-communicator: moe must use
// it, must not finalise MPI, and the caller's own MPI_Finalize must still work.
// Exits non-zero, naming the problem, on any failure.
#include <cstdio>

#include "moe/layer.hpp"
#include "moe/mpi.hpp"
#include "moe/moe.hpp"

#define REQUIRE(cond)                                                       \
  do {                                                                      \
    if (!(cond)) {                                                          \
      std::fprintf(stderr, "caller_owns_mpi: failed: %s (line %d)\n", #cond, __LINE__); \
      MPI_Abort(MPI_COMM_WORLD, 3);                                         \
    }                                                                       \
  } while (0)

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int world_rank = 0, world_size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  MPI_Comm halves = MPI_COMM_NULL;  // even and odd world ranks
  MPI_Comm_split(MPI_COMM_WORLD, world_rank % 2, world_rank, &halves);
  {
    auto comm = moe::make_mpi_communicator(halves);
    REQUIRE(comm->size() == (world_size + 1 - world_rank % 2) / 2);
    REQUIRE(comm->rank() == world_rank / 2);
    const moe::MOEConfig config(2 * comm->size(), 1, 8, 8);
    moe::MoELayer layer(config, *comm, 5);
    const moe::Tensor<float> x({6, 8});
    REQUIRE(layer.forward(x).output.numel() == 48);
    // Auto must pick MPI here, because MPI is initialised.
    REQUIRE(moe::make_communicator()->backend() == moe::CommBackend::MPI);
  }
  int finalized = 1;
  MPI_Finalized(&finalized);
  REQUIRE(finalized == 0);
  MPI_Comm_free(&halves);
  MPI_Finalize();
  if (world_rank == 0) std::printf("caller_owns_mpi: ok on %d ranks\n", world_size);
  return 0;
}
