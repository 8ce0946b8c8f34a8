// The MPI backend: host memory, MPI_Alltoallv of whole rows, every return code checked.
#include <mpi.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <algorithm>
#include <map>
#include <vector>

#include "check.hpp"
#include "comm/backends.hpp"
#include "moe/mpi.hpp"
#include "process_identity.hpp"

namespace moe::comm {
namespace {

struct Mpi {
  static constexpr const char* library = "MPI";
  static bool ok(int rc) { return rc == MPI_SUCCESS; }
  static std::string name(int rc) {
    char text[MPI_MAX_ERROR_STRING] = {};
    int length = 0;
    if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS) return "error " + std::to_string(rc);
    return std::string(text, static_cast<std::size_t>(length));
  }
};

// An exception that escapes main on one rank would leave the others waiting in a
// collective forever: end the whole job instead, with the message.
[[noreturn]] void abort_job_on_uncaught_exception() {
  std::string what = "unknown exception";
  if (auto pending = std::current_exception()) {
    try {
      std::rethrow_exception(pending);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
  }
  std::fprintf(stderr, "moe: rank %d on %s: terminating on an uncaught exception: %s\n",
               detail::process_rank(), detail::host_name().c_str(), what.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

// MPI is initialised by moe only when the caller has not, and then finalised at exit.
void ensure_mpi_initialized() {
  int initialized = 0;
  MOE_CHECK(Mpi, MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = 0;
    // Only the calling thread talks to MPI; OpenMP threads never do.
    MOE_CHECK(Mpi, MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    std::atexit([] {
      int finalized = 0;
      MPI_Finalized(&finalized);
      if (!finalized) MPI_Finalize();
    });
  }
  static const bool handler_installed = [] {
    std::set_terminate(abort_job_on_uncaught_exception);
    return true;
  }();
  (void)handler_installed;
}

bool mpi_finalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

MPI_Datatype mpi_type(DataType type) {
  switch (type) {
    case DataType::Int32: return MPI_INT32_T;
    case DataType::Int64: return MPI_INT64_T;
    case DataType::Float32: return MPI_FLOAT;
    case DataType::Float64: return MPI_DOUBLE;
  }
  return MPI_BYTE;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return MPI_SUM;
    case ReduceOp::Max: return MPI_MAX;
    case ReduceOp::Min: return MPI_MIN;
  }
  return MPI_SUM;
}

int checked_int(std::int64_t value, const char* what) {
  MOE_CHECK_ARG(value >= 0 && value <= INT_MAX, "MpiCommunicator", what, " = ", value,
                "; MPI counts must be in [0, 2^31 - 1]");
  return static_cast<int>(value);
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm parent) {
    adopt_duplicate(parent);
    MPI_Comm node = MPI_COMM_NULL;
    MOE_CHECK(Mpi, MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    MOE_CHECK(Mpi, MPI_Comm_rank(node, &local_rank_));
    MOE_CHECK(Mpi, MPI_Comm_size(node, &local_size_));
    MOE_CHECK(Mpi, MPI_Comm_free(&node));
  }
  // A group split from another communicator, with that one's view of the node.
  MpiCommunicator(MPI_Comm group, int local_rank, int local_size) : local_rank_(local_rank), local_size_(local_size) {
    adopt_duplicate(group);
  }

  ~MpiCommunicator() override {
    if (mpi_finalized()) return;  // too late to free anything; MPI has released it all
    for (auto& [bytes, type] : row_types_) MPI_Type_free(&type);
    if (comm_ != MPI_COMM_NULL && MPI_Comm_free(&comm_) != MPI_SUCCESS)
      std::fprintf(stderr, "moe: MPI_Comm_free failed in ~MpiCommunicator\n");
  }

  CommBackend backend() const override { return CommBackend::MPI; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }

  void all_to_all(const std::int64_t* send, std::int64_t* recv, int count_per_rank) override {
    MOE_CHECK(Mpi, MPI_Alltoall(send, count_per_rank, MPI_INT64_T, recv, count_per_rank, MPI_INT64_T, comm_));
  }

  void all_to_allv(const void* send, const std::int64_t* send_rows, void* recv,
                   const std::int64_t* recv_rows, std::size_t row_bytes) override {
    const Layout& l = layout(send_rows, recv_rows);
    // Counts in whole rows, so that buffers of more than 2^31 bytes still fit int counts.
    const MPI_Datatype row = row_type(row_bytes);
    MOE_CHECK(Mpi, MPI_Alltoallv(send, l.send_counts.data(), l.send_displs.data(), row, recv, l.recv_counts.data(),
                                 l.recv_displs.data(), row, comm_));
  }

  // `second` as point-to-point messages posted before `first` runs blocking, so that
  // both are in flight while this rank waits for its peers. (Not MPI_Ialltoallv: on
  // Open MPI 4.1 an Ialltoallv beside a blocking Alltoallv hung in the tests when one
  // rank had no tokens; counts of zero are skipped on both sides here, consistently.)
  void all_to_allv_pair(const RowExchange& first, const RowExchange& second) override {
    constexpr int kPairTag = 0x6d6f65;  // "moe": no other point-to-point message uses comm_
    const auto P = static_cast<std::size_t>(size_);
    requests_.clear();
    const auto* out = static_cast<const char*>(second.send);
    auto* in = static_cast<char*>(second.recv);
    const MPI_Datatype row = row_type(second.row_bytes);
    for (std::size_t p = 0; p < P; ++p) {
      const int peer = static_cast<int>(p);
      if (second.recv_rows[p] > 0) {
        requests_.emplace_back();
        MOE_CHECK(Mpi, MPI_Irecv(in, checked_int(second.recv_rows[p], "rows to receive"), row, peer, kPairTag, comm_,
                                 &requests_.back()));
      }
      if (second.send_rows[p] > 0) {
        requests_.emplace_back();
        MOE_CHECK(Mpi, MPI_Isend(out, checked_int(second.send_rows[p], "rows to send"), row, peer, kPairTag, comm_,
                                 &requests_.back()));
      }
      in += static_cast<std::size_t>(second.recv_rows[p]) * second.row_bytes;
      out += static_cast<std::size_t>(second.send_rows[p]) * second.row_bytes;
    }
    try {
      all_to_allv(first.send, first.send_rows, first.recv, first.recv_rows, first.row_bytes);
    } catch (...) {
      MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE);
      throw;
    }
    MOE_CHECK(Mpi, MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE));
  }

  void all_reduce(void* data, std::int64_t count, DataType type, ReduceOp op) override {
    MOE_CHECK(Mpi, MPI_Allreduce(MPI_IN_PLACE, data, checked_int(count, "all_reduce count"), mpi_type(type),
                                 mpi_op(op), comm_));
  }

  void broadcast(void* data, std::size_t bytes, int root) override {
    // In chunks, because MPI counts are int.
    constexpr std::size_t kChunk = std::size_t{1} << 30;
    auto* bytes_ptr = static_cast<char*>(data);
    for (std::size_t offset = 0; offset < bytes; offset += kChunk) {
      const int n = static_cast<int>(std::min(kChunk, bytes - offset));
      MOE_CHECK(Mpi, MPI_Bcast(bytes_ptr + offset, n, MPI_BYTE, root, comm_));
    }
  }

  void barrier() override { MOE_CHECK(Mpi, MPI_Barrier(comm_)); }

  std::unique_ptr<Communicator> split(int color, int key) override {
    MOE_CHECK_ARG(color >= 0, "Communicator::split", "color = ", color, "; expected >= 0");
    MPI_Comm group = MPI_COMM_NULL;
    MOE_CHECK(Mpi, MPI_Comm_split(comm_, color, key, &group));
    std::unique_ptr<Communicator> out;
    try {
      out = std::make_unique<MpiCommunicator>(group, local_rank_, local_size_);
    } catch (...) {
      MPI_Comm_free(&group);
      throw;
    }
    MOE_CHECK(Mpi, MPI_Comm_free(&group));  // the new communicator holds a duplicate
    return out;
  }

  const void* native_handle() const override { return &comm_; }

  [[noreturn]] void abort(const std::string& message, int exit_code) noexcept override {
    std::fprintf(stderr, "moe: rank %d on %s: %s\n", rank_, detail::host_name().c_str(), message.c_str());
    std::fflush(stderr);
    MPI_Abort(comm_, exit_code);
    std::_Exit(exit_code);
  }

 private:
  // comm_ = a duplicate of `parent` (moe's traffic never mixes with the caller's), whose
  // errors come back as return codes, which MOE_CHECK turns into moe::Error.
  void adopt_duplicate(MPI_Comm parent) {
    ensure_mpi_initialized();
    MOE_CHECK(Mpi, MPI_Comm_dup(parent, &comm_));
    MOE_CHECK(Mpi, MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    MOE_CHECK(Mpi, MPI_Comm_rank(comm_, &rank_));
    MOE_CHECK(Mpi, MPI_Comm_size(comm_, &size_));
    int world_rank = 0;
    MOE_CHECK(Mpi, MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
    detail::set_process_rank(world_rank);
  }

  MPI_Datatype row_type(std::size_t row_bytes) {
    auto it = row_types_.find(row_bytes);
    if (it != row_types_.end()) return it->second;
    MPI_Datatype type = MPI_DATATYPE_NULL;
    MOE_CHECK(Mpi, MPI_Type_contiguous(checked_int(static_cast<std::int64_t>(row_bytes), "row bytes"),
                                       MPI_BYTE, &type));
    MOE_CHECK(Mpi, MPI_Type_commit(&type));
    row_types_.emplace(row_bytes, type);
    return type;
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::map<std::size_t, MPI_Datatype> row_types_;
  // Counts and displacements of an exchange, in rows.
  struct Layout {
    std::vector<int> send_counts, send_displs, recv_counts, recv_displs;
  };
  const Layout& layout(const std::int64_t* send_rows, const std::int64_t* recv_rows) {
    const auto P = static_cast<std::size_t>(size_);
    Layout& l = layout_;
    l.send_counts.resize(P), l.send_displs.resize(P), l.recv_counts.resize(P), l.recv_displs.resize(P);
    std::int64_t send_offset = 0, recv_offset = 0;
    for (std::size_t p = 0; p < P; ++p) {
      l.send_counts[p] = checked_int(send_rows[p], "rows to send");
      l.recv_counts[p] = checked_int(recv_rows[p], "rows to receive");
      l.send_displs[p] = checked_int(send_offset, "send offset");
      l.recv_displs[p] = checked_int(recv_offset, "receive offset");
      send_offset += send_rows[p];
      recv_offset += recv_rows[p];
    }
    return l;
  }
  Layout layout_;
  std::vector<MPI_Request> requests_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_world() {
  ensure_mpi_initialized();
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
}

bool mpi_launch_detected() {
  int initialized = 0;
  if (MPI_Initialized(&initialized) == MPI_SUCCESS && initialized) return true;
  // Set by the launchers of Open MPI, PMIx, MPICH/Hydra and MVAPICH for their ranks.
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"})
    if (std::getenv(var)) return true;
  return false;
}

}  // namespace moe::comm

namespace moe {

std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm) {
  return std::make_unique<comm::MpiCommunicator>(comm);
}

}  // namespace moe
