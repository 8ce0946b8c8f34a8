// GoogleTest under mpirun: every test runs on every rank, failures are combined with
// an all-reduce so all ranks agree on each test's result, and only failing ranks
// print their failures (rank 0 prints the progress lines).
#pragma once

#include <gtest/gtest.h>

#include "moe/communicator.hpp"
#include "moe/layer.hpp"

namespace moe::testing {

// The job's communicator (MPI_COMM_WORLD), made once by the test main.
Communicator& world();

// The transport under test: MPI, or NCCL when the environment sets MOE_TEST_COMM=nccl
// (which puts the layers on the GPU: NCCL moves device memory).
moe::CommBackend test_comm_backend();

// Layer options for the device under test: the CPU, or the GPU when the environment
// sets MOE_TEST_DEVICE=cuda (ctest -L cuda) or MOE_TEST_COMM=nccl.
moe::LayerOptions layer_options();

// Base fixture for multi-rank tests. Keep collective calls unconditional in a test
// body (no ASSERT_ before a collective), so that a failure on one rank cannot leave
// the others waiting; check with EXPECT_ or ASSERT_ after the collectives.
class MpiTest : public ::testing::Test {
 protected:
  void SetUp() override;  // skips (on every rank alike) a GPU run without a GPU
  void TearDown() override;
};

// Tokens per rank for the invariance tests: uneven (rank r has base + step·r), or every
// rank the same but the last, which has none.
inline std::int64_t uneven_tokens(int rank, std::int64_t base, std::int64_t step) { return base + step * rank; }
inline std::int64_t none_on_last_rank(int rank, int ranks, std::int64_t tokens) {
  return rank == ranks - 1 ? 0 : tokens;
}

// The fewest experts, at least `at_least`, that `ranks` ranks share evenly: the tests'
// models of 8 experts stay 8 at 1, 2, 4 and 8 ranks, and the suite runs at any rank
// count (9 experts at 3 ranks, 10 at 5).
inline std::int64_t experts_shared_by(int ranks, std::int64_t at_least = 8) {
  return (at_least + ranks - 1) / ranks * ranks;
}

// The message of the failure added on ranks that passed when another rank failed;
// the printer does not repeat it.
inline constexpr const char* kFailedElsewhere = "(failed on another rank)";

}  // namespace moe::testing
