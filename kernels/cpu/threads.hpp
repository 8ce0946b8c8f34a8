// How many OpenMP threads a rank's CPU work uses when the user has not said
// (OMP_NUM_THREADS): its share of the node's cores, so that ranks sharing a node do
// not oversubscribe it (docs/design.md §4a).
#pragma once

namespace moe::kernels::cpu {

// Sets the OpenMP thread count to max(1, min(cores this process may run on,
// hardware cores / ranks_on_node)) unless OMP_NUM_THREADS is set. Returns the count.
int share_cores_among_local_ranks(int ranks_on_node);

}  // namespace moe::kernels::cpu
