#include "kernels/cpu/threads.hpp"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace moe::kernels::cpu {

int share_cores_among_local_ranks(int ranks_on_node) {
  if (std::getenv("OMP_NUM_THREADS")) return omp_get_max_threads();
  // omp_get_num_procs honours the affinity mask, so a rank bound to one core gets one.
  // It is also OpenMP's default count. Only that default is replaced: a count the
  // caller set is theirs, and a share set for the job's ranks must stay when a later
  // layer has a communicator of one rank (a single-process layer beside the job's).
  // Raising it back to every core put 8 spinning threads on 2 cores under `mpirun -n 4`.
  const int allowed = omp_get_num_procs();
  const int current = omp_get_max_threads();
  if (current != allowed) return current;
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int share = std::max(1, std::min(allowed, hardware / std::max(1, ranks_on_node)));
  omp_set_num_threads(share);
  return share;
}

}  // namespace moe::kernels::cpu
