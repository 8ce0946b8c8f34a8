// An exception that escapes main on one rank while the others wait in a collective.
// The job must end, non-zero, with the message (tests/mpi/check-abort.sh runs it).
#include <cstdio>
#include <stdexcept>

#include "moe/layer.hpp"

int main() {
  auto comm = moe::make_communicator(moe::CommBackend::MPI);
  moe::MoELayer layer(moe::MOEConfig(2 * comm->size(), 1, 8, 8), *comm, 1);
  if (comm->rank() == 1 % comm->size()) throw std::runtime_error("deliberate failure on rank 1");
  moe::Tensor<float> x({4, 8});
  layer.forward(x);  // the other ranks wait here for rank 1
  std::printf("rank %d finished: this must not be reached\n", comm->rank());
  return 0;
}
