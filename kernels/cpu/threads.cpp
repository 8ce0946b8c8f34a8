#include "kernels/cpu/threads.hpp"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace moe::kernels::cpu {

int share_cores_among_local_ranks(int ranks_on_node) {
  if (std::getenv("OMP_NUM_THREADS")) return omp_get_max_threads();
  // omp_get_num_procs honours the affinity mask, so a rank bound to one core gets one.
  const int allowed = omp_get_num_procs();
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int share = std::max(1, std::min(allowed, hardware / std::max(1, ranks_on_node)));
  omp_set_num_threads(share);
  return share;
}

}  // namespace moe::kernels::cpu
