// The MPI backend's collectives, checked on every rank with values that identify
// sender and receiver, and the local-rank split.
#include <numeric>

#include "buffer.hpp"
#include "kernels/ops.hpp"
#include "moe/communicator.hpp"
#include "mpi_test_env.hpp"
#include "support/test_util.hpp"

using moe::testing::world;

namespace {

class Communicator : public moe::testing::MpiTest {};

TEST_F(Communicator, LocalRankComesFromTheSharedMemorySplit) {
  // Every test rank runs on this one machine.
  EXPECT_EQ(world().backend(), moe::testing::test_comm_backend());
  EXPECT_EQ(world().local_size(), world().size());
  EXPECT_EQ(world().local_rank(), world().rank());
}

TEST_F(Communicator, AllToAllDeliversEachPeersSlot) {
  const int P = world().size(), r = world().rank();
  std::vector<std::int64_t> send(2 * P), recv(2 * P, -1);
  for (int p = 0; p < P; ++p) send[2 * p] = 100 * r + p, send[2 * p + 1] = -(100 * r + p);
  world().all_to_all(send.data(), recv.data(), 2);
  for (int p = 0; p < P; ++p) {
    EXPECT_EQ(recv[2 * p], 100 * p + r);
    EXPECT_EQ(recv[2 * p + 1], -(100 * p + r));
  }
}

TEST_F(Communicator, AllToAllvMovesRowsOfUnevenCounts) {
  // Rank r sends (r + p) % 3 rows to rank p, including zero rows; row values name
  // (sender, receiver, row).
  const int P = world().size(), r = world().rank();
  const std::size_t width = 5;
  std::vector<std::int64_t> send_rows(P), recv_rows(P);
  std::vector<float> send;
  for (int p = 0; p < P; ++p) {
    send_rows[p] = (r + p) % 3;
    recv_rows[p] = (p + r) % 3;
    for (int i = 0; i < send_rows[p]; ++i)
      for (std::size_t c = 0; c < width; ++c) send.push_back(float(1000 * r + 10 * p + i) + 0.01f * c);
  }
  std::vector<float> recv(std::accumulate(recv_rows.begin(), recv_rows.end(), std::int64_t{0}) * width, -1.0f);
  world().all_to_allv(send.data(), send_rows.data(), recv.data(), recv_rows.data(), width * sizeof(float));
  std::size_t at = 0;
  for (int p = 0; p < P; ++p)
    for (int i = 0; i < recv_rows[p]; ++i)
      for (std::size_t c = 0; c < width; ++c) EXPECT_FLOAT_EQ(recv[at++], float(1000 * p + 10 * r + i) + 0.01f * c);
}

TEST_F(Communicator, PayloadCollectivesInTheirMemorySpace) {
  // The token rows' transport and the gate gradient's sum, in the memory the backend
  // moves (device memory for NCCL: its grouped send/recv and all-reduce).
  const int P = world().size(), r = world().rank();
  const bool on_device = world().payload_memory() == moe::MemorySpace::Device;
  std::unique_ptr<moe::kernels::Ops> ops = on_device ? moe::kernels::make_cuda_ops(world().local_rank() %
                                                                                   moe::kernels::cuda_device_count(),
                                                                               moe::kernels::GemmPrecision::FP32)
                                                     : moe::kernels::make_cpu_ops();
  const std::size_t width = 3;
  std::vector<std::int64_t> send_rows(P), recv_rows(P);
  std::vector<float> send;
  for (int p = 0; p < P; ++p) {
    send_rows[p] = 1 + (r + p) % 2, recv_rows[p] = 1 + (p + r) % 2;
    for (int i = 0; i < send_rows[p]; ++i)
      for (std::size_t c = 0; c < width; ++c) send.push_back(float(100 * r + 10 * p + i + c));
  }
  const std::int64_t received = std::accumulate(recv_rows.begin(), recv_rows.end(), std::int64_t{0});
  moe::Buffer<float> d_send(*ops), d_recv(*ops), d_sum(*ops);
  d_send.upload(send);
  d_recv.resize(static_cast<std::size_t>(received) * width);
  world().all_to_allv_payload(d_send.data(), send_rows.data(), d_recv.data(), recv_rows.data(), width * sizeof(float));
  const std::vector<float> recv = d_recv.download();
  std::size_t at = 0;
  for (int p = 0; p < P; ++p)
    for (int i = 0; i < recv_rows[p]; ++i)
      for (std::size_t c = 0; c < width; ++c) EXPECT_EQ(recv[at++], float(100 * p + 10 * r + i + c));
  d_sum.upload(std::vector<float>{float(r), 1.0f});
  world().all_reduce_payload(d_sum.data(), 2, moe::DataType::Float32, moe::ReduceOp::Sum);
  const std::vector<float> sum = d_sum.download();
  EXPECT_EQ(sum[0], float(P * (P - 1) / 2));
  EXPECT_EQ(sum[1], float(P));
}

TEST_F(Communicator, AllReduceAndBroadcast) {
  const int P = world().size(), r = world().rank();
  std::int64_t sum = r + 1, hi = r, lo = r;
  world().all_reduce(&sum, 1, moe::DataType::Int64, moe::ReduceOp::Sum);
  world().all_reduce(&hi, 1, moe::DataType::Int64, moe::ReduceOp::Max);
  world().all_reduce(&lo, 1, moe::DataType::Int64, moe::ReduceOp::Min);
  EXPECT_EQ(sum, std::int64_t(P) * (P + 1) / 2);
  EXPECT_EQ(hi, P - 1);
  EXPECT_EQ(lo, 0);
  double d[2] = {0.5 * r, 1.0};
  world().all_reduce(d, 2, moe::DataType::Float64, moe::ReduceOp::Sum);
  EXPECT_DOUBLE_EQ(d[1], P);
  char text[16] = {};
  if (r == P - 1) std::snprintf(text, sizeof text, "from %d", r);
  world().broadcast(text, sizeof text, P - 1);
  EXPECT_EQ(std::string(text), "from " + std::to_string(P - 1));
  world().barrier();
}

// Groups split off the job: ranked by key, summing among themselves, and keeping the
// job's view of the node (which picks a rank's GPU and its CPU threads).
TEST_F(Communicator, SplitGroupsRankByKeyAndKeepTheNodeView) {
  const int P = world().size(), r = world().rank();
  const std::unique_ptr<moe::Communicator> half = world().split(r % 2, -r);  // reversed order
  const int members = (P - r % 2 + 1) / 2;
  EXPECT_EQ(half->size(), members);
  EXPECT_EQ(half->rank(), members - 1 - r / 2);
  EXPECT_EQ(half->backend(), world().backend());
  EXPECT_EQ(half->local_rank(), world().local_rank());
  EXPECT_EQ(half->local_size(), world().local_size());
  std::int64_t sum = r;
  half->all_reduce(&sum, 1, moe::DataType::Int64, moe::ReduceOp::Sum);
  std::int64_t expected = 0;
  for (int q = r % 2; q < P; q += 2) expected += q;
  EXPECT_EQ(sum, expected);
}

TEST_F(Communicator, SplitExpertParallelMakesAGridOfGroupsAndReplicas) {
  const int P = world().size(), r = world().rank();
  for (int group = 1; group <= P; ++group) {
    if (P % group != 0) continue;
    SCOPED_TRACE("groups of " + std::to_string(group));
    const moe::ExpertParallelGroups groups = moe::split_expert_parallel(world(), group);
    EXPECT_EQ(groups.experts->size(), group);
    EXPECT_EQ(groups.experts->rank(), r % group);
    EXPECT_EQ(groups.replicas->size(), P / group);
    EXPECT_EQ(groups.replicas->rank(), r / group);
    std::int64_t sums[2] = {r, r};
    groups.experts->all_reduce(&sums[0], 1, moe::DataType::Int64, moe::ReduceOp::Sum);
    groups.replicas->all_reduce(&sums[1], 1, moe::DataType::Int64, moe::ReduceOp::Sum);
    const std::int64_t first = r - r % group;  // the group's first rank
    EXPECT_EQ(sums[0], group * first + group * (group - 1) / 2);
    EXPECT_EQ(sums[1], std::int64_t(P / group) * (r % group) + std::int64_t(group) * (P / group) * (P / group - 1) / 2);
  }
}

TEST_F(Communicator, SplitExpertParallelRefusesSizesThatDoNotDivideTheJob) {
  const int P = world().size(), r = world().rank();
  EXPECT_MOE_ERROR(moe::split_expert_parallel(world(), 0), "expert_parallel_size = 0 with ",
                   "expected a divisor of the number of ranks");
  const std::string too_many = "expert_parallel_size = " + std::to_string(P + 1);
  EXPECT_MOE_ERROR(moe::split_expert_parallel(world(), P + 1), too_many.c_str());
  if (P > 1)
    EXPECT_MOE_ERROR(moe::split_expert_parallel(world(), r == 0 ? 1 : P), "expert_parallel_size ranges from 1 to ",
                     "expected the same on every rank");
}

}  // namespace
