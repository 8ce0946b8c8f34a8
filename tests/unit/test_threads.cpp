// The OpenMP thread count a CPU layer sets when the user has chosen none
// (kernels/cpu/threads.hpp): OpenMP's default becomes the rank's share of the node's
// cores; a count the user chose, or one already set for the job's ranks, is kept.
#include <gtest/gtest.h>
#include <omp.h>

#include "kernels/cpu/threads.hpp"
#include "support/test_util.hpp"

using moe::kernels::cpu::share_cores_among_local_ranks;
using moe::testing::ScopedEnvironment;

namespace {

// More ranks than any machine has cores: each rank's share is one thread.
constexpr int kCrowd = 1 << 20;

// OMP_NUM_THREADS unset for the test (the rule reads it), and the process's count put
// back afterwards.
class ShareCores : public ::testing::Test {
 protected:
  const ScopedEnvironment unset_{"OMP_NUM_THREADS", ""};
  const int before_ = omp_get_max_threads();
  const int procs_ = omp_get_num_procs();
  void TearDown() override { omp_set_num_threads(before_); }
};

}  // namespace

TEST_F(ShareCores, OpenMPsDefaultBecomesTheRanksShare) {
  omp_set_num_threads(procs_);  // OpenMP's default where OMP_NUM_THREADS is unset
  EXPECT_EQ(share_cores_among_local_ranks(1), procs_);  // one rank on the node: every core
  EXPECT_EQ(omp_get_max_threads(), procs_);
  EXPECT_EQ(share_cores_among_local_ranks(kCrowd), 1);
  EXPECT_EQ(omp_get_max_threads(), 1);
}

// A single-process layer (a communicator of one rank) built in a job whose layer has set
// each rank's share: raising the count back to every core oversubscribed the node. With
// 4 ranks on 2 cores, `mpirun -n 4 moe_mpi_tests` took 37 s that way and 1.4 s with one
// thread per rank.
TEST_F(ShareCores, ACountSetForTheJobIsNotRaisedByALaterSingleRankLayer) {
  if (procs_ < 2) GTEST_SKIP() << "one core: every share is one thread";
  omp_set_num_threads(procs_);
  ASSERT_EQ(share_cores_among_local_ranks(kCrowd), 1);
  EXPECT_EQ(share_cores_among_local_ranks(1), 1);
  EXPECT_EQ(omp_get_max_threads(), 1);
}

TEST_F(ShareCores, ACountTheUserChoseIsKept) {
  omp_set_num_threads(procs_ + 1);  // omp_set_num_threads before the layer is built
  EXPECT_EQ(share_cores_among_local_ranks(kCrowd), procs_ + 1);
  EXPECT_EQ(share_cores_among_local_ranks(1), procs_ + 1);
  EXPECT_EQ(omp_get_max_threads(), procs_ + 1);

  const ScopedEnvironment chosen("OMP_NUM_THREADS", "3");  // OpenMP read it at start; the rule reads it too
  omp_set_num_threads(procs_);
  EXPECT_EQ(share_cores_among_local_ranks(kCrowd), procs_);
  EXPECT_EQ(omp_get_max_threads(), procs_);
}
