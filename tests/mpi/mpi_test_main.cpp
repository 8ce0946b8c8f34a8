#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "mpi_test_env.hpp"

namespace moe::testing {
namespace {

std::unique_ptr<Communicator> g_world;

// Prints only this rank's own failures (prefixed with the rank); rank 0 also prints
// each test's name and agreed result, and the summary.
class RankAwarePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankAwarePrinter(int rank) : rank_(rank) {}

  void OnTestStart(const ::testing::TestInfo& info) override {
    if (rank_ == 0) std::printf("[ RUN      ] %s.%s\n", info.test_suite_name(), info.name());
    std::fflush(stdout);
  }
  void OnTestPartResult(const ::testing::TestPartResult& part) override {
    if (!part.failed() || std::string(part.message()).find(kFailedElsewhere) != std::string::npos) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, part.file_name() ? part.file_name() : "?",
                 part.line_number(), part.summary());
    std::fflush(stderr);
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (rank_ != 0) return;
    const bool ok = info.result()->Passed();
    std::printf("[ %s ] %s.%s (%lld ms)\n", ok ? "      OK" : "  FAILED", info.test_suite_name(), info.name(),
                static_cast<long long>(info.result()->elapsed_time()));
    std::fflush(stdout);
  }
  void OnTestProgramEnd(const ::testing::UnitTest& unit) override {
    if (rank_ != 0) return;
    std::printf("[==========] %d tests on every rank: %d passed, %d failed\n", unit.test_to_run_count(),
                unit.successful_test_count(), unit.failed_test_count());
  }

 private:
  int rank_;
};

}  // namespace

Communicator& world() { return *g_world; }

moe::CommBackend test_comm_backend() {
  const char* comm = std::getenv("MOE_TEST_COMM");
  return comm && std::string(comm) == "nccl" ? moe::CommBackend::NCCL : moe::CommBackend::MPI;
}

moe::LayerOptions layer_options() {
  moe::LayerOptions options;
  const char* device = std::getenv("MOE_TEST_DEVICE");
  if ((device && std::string(device) == "cuda") || test_comm_backend() == moe::CommBackend::NCCL)
    options.device = moe::Device::CUDA;
  return options;
}

void MpiTest::SetUp() {
  if (layer_options().device == moe::Device::CUDA && moe::cuda_device_count() == 0)
    GTEST_SKIP() << "MOE_TEST_DEVICE=cuda but no CUDA device is visible";
}

void MpiTest::TearDown() {
  std::int32_t failed = HasFailure() ? 1 : 0;
  world().all_reduce(&failed, 1, DataType::Int32, ReduceOp::Max);
  if (failed && !HasFailure()) ADD_FAILURE() << kFailedElsewhere;
}

}  // namespace moe::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const moe::CommBackend backend = moe::testing::test_comm_backend();
  if (backend == moe::CommBackend::NCCL && moe::cuda_device_count() == 0) {
    std::printf("MOE_TEST_COMM=nccl but no CUDA device is visible: nothing to test\n");
    return 77;  // ctest's "skipped"
  }
  moe::testing::g_world = moe::make_communicator(backend);
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  delete listeners.Release(listeners.default_result_printer());
  listeners.Append(new moe::testing::RankAwarePrinter(moe::testing::g_world->rank()));
  if (moe::testing::g_world->rank() == 0)
    std::printf("moe MPI tests on %d rank(s) over %s\n", moe::testing::g_world->size(),
                moe::comm_backend_name(moe::testing::g_world->backend()));
  const int failed = RUN_ALL_TESTS();
  moe::testing::g_world.reset();
  // A GPU run on a machine without a GPU skipped everything: say so to ctest (77).
  if (!failed && moe::testing::layer_options().device == moe::Device::CUDA && moe::cuda_device_count() == 0) return 77;
  return failed;
}
