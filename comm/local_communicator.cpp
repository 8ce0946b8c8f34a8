// World size 1: every collective is a copy or nothing. Needs no MPI at run time.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "comm/backends.hpp"

namespace moe::comm {
namespace {

class LocalCommunicator final : public Communicator {
 public:
  CommBackend backend() const override { return CommBackend::Local; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }

  void all_to_all(const std::int64_t* send, std::int64_t* recv, int count_per_rank) override {
    std::memmove(recv, send, sizeof(std::int64_t) * static_cast<std::size_t>(count_per_rank));
  }
  void all_to_allv(const void* send, const std::int64_t* send_rows, void* recv, const std::int64_t*,
                   std::size_t row_bytes) override {
    if (send_rows[0] > 0) std::memmove(recv, send, static_cast<std::size_t>(send_rows[0]) * row_bytes);
  }
  void all_reduce(void*, std::int64_t, DataType, ReduceOp) override {}
  void broadcast(void*, std::size_t, int) override {}
  void barrier() override {}
  std::unique_ptr<Communicator> split(int, int) override { return std::make_unique<LocalCommunicator>(); }
  [[noreturn]] void abort(const std::string& message, int exit_code) noexcept override {
    std::fprintf(stderr, "moe: %s\n", message.c_str());
    std::fflush(stderr);
    std::_Exit(exit_code);
  }
};

}  // namespace

std::unique_ptr<Communicator> make_local() { return std::make_unique<LocalCommunicator>(); }

}  // namespace moe::comm
