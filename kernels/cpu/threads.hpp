// How many OpenMP threads a rank's CPU work uses when the user has not said: its share
// of the node's cores, so that ranks sharing a node do not oversubscribe it
// (docs/design.md §4a).
#pragma once

namespace moe::kernels::cpu {

// Where the thread count is still OpenMP's default (OMP_NUM_THREADS unset, and no
// omp_set_num_threads since), sets it to max(1, min(cores this process may run on,
// hardware cores / ranks_on_node)); any other count is kept: the user's, or a share set
// by an earlier layer. Returns the count.
int share_cores_among_local_ranks(int ranks_on_node);

}  // namespace moe::kernels::cpu
