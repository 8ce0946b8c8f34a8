// Communicator: the collectives an expert-parallel MoE layer needs, behind one
// interface with a backend per transport (docs/design.md §2, §4). Every rank of a job must
// call each collective in the same order; they block until every rank has joined.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace moe {

enum class CommBackend {
  Auto,   // MPI when the process runs under an MPI launcher (or MPI is initialised), else Local
  Local,  // one process, world size 1; needs no MPI at run time
  MPI,    // host memory over MPI_COMM_WORLD (or the caller's communicator, moe/mpi.hpp)
  NCCL,   // device memory over NCCL (a later issue; a clear error until it is built)
};

const char* comm_backend_name(CommBackend backend);

enum class DataType { Int32, Int64, Float32, Float64 };
enum class ReduceOp { Sum, Max, Min };

// Where a backend's payload collectives (all_to_allv_payload, all_reduce_payload)
// expect their buffers: host memory for Local and MPI, device memory for NCCL.
enum class MemorySpace { Host, Device };

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual CommBackend backend() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // This rank's index among the ranks sharing its node, and how many share it (found
  // with an MPI shared-memory split, not from launcher environment variables).
  virtual int local_rank() const = 0;
  virtual int local_size() const = 0;

  // recv[p·n + i] = send[rank·n + i] of rank p, for n = count_per_rank.
  virtual void all_to_all(const std::int64_t* send, std::int64_t* recv, int count_per_rank) = 0;

  // Rows of row_bytes bytes. send holds send_rows[p] rows for each rank p, packed in
  // rank order; recv receives recv_rows[p] rows from each rank p, packed likewise.
  virtual void all_to_allv(const void* send, const std::int64_t* send_rows, void* recv,
                           const std::int64_t* recv_rows, std::size_t row_bytes) = 0;

  // One all_to_allv's arguments.
  struct RowExchange {
    const void* send;
    const std::int64_t* send_rows;
    void* recv;
    const std::int64_t* recv_rows;
    std::size_t row_bytes;
  };
  // Two all_to_allv exchanges of host memory in flight at once, so that a step waits
  // for its peers once rather than twice (the token rows and their assignment
  // records). MPI posts `second` as point-to-point messages before `first`; the
  // default runs them one after the other.
  virtual void all_to_allv_pair(const RowExchange& first, const RowExchange& second) {
    all_to_allv(first.send, first.send_rows, first.recv, first.recv_rows, first.row_bytes);
    all_to_allv(second.send, second.send_rows, second.recv, second.recv_rows, second.row_bytes);
  }

  virtual void all_reduce(void* data, std::int64_t count, DataType type, ReduceOp op) = 0;
  virtual void broadcast(void* data, std::size_t bytes, int root) = 0;
  virtual void barrier() = 0;

  // The collectives above take host memory. The payload ones — token rows and the
  // gate's gradient — take buffers in payload_memory(): the same host collectives for
  // Local and MPI, device-to-device transfers for NCCL.
  virtual MemorySpace payload_memory() const { return MemorySpace::Host; }
  virtual void all_to_allv_payload(const void* send, const std::int64_t* send_rows, void* recv,
                                   const std::int64_t* recv_rows, std::size_t row_bytes) {
    all_to_allv(send, send_rows, recv, recv_rows, row_bytes);
  }
  virtual void all_reduce_payload(void* data, std::int64_t count, DataType type, ReduceOp op) {
    all_reduce(data, count, type, op);
  }

  // The transport's own communicator, for libraries that take one (parallel HDF5):
  // a pointer to the MPI_Comm for the MPI-based backends, null for Local.
  virtual const void* native_handle() const { return nullptr; }

  // Ends the whole job (every rank) after printing message with this rank's name.
  [[noreturn]] virtual void abort(const std::string& message, int exit_code = 1) noexcept = 0;

  // Collective: the ranks that pass the same `color` (>= 0) form a new communicator of
  // this one's backend, ranked by `key` (ties by their rank here). It keeps this one's
  // view of the node (local_rank, local_size): that view picks a rank's GPU and its
  // share of the CPU cores, which belong to the node's processes, whatever the group.
  // The default throws (a backend that cannot split).
  virtual std::unique_ptr<Communicator> split(int color, int key);
};

// Expert parallelism inside data parallelism (docs/design.md §2): `world`'s ranks in
// groups of `expert_parallel_size` consecutive ranks. Each group holds every expert once
// and shards them over `experts`, the communicator its MoELayer is built on; `replicas`
// joins the ranks at the same position of every group, which hold the same experts and
// sum their gradients (MoELayer's constructor with both). Consecutive ranks, so that a
// group's all-to-all stays within a node where the launcher fills nodes rank by rank.
// Collective over world; every rank must pass the same size, a divisor of world's.
struct ExpertParallelGroups {
  std::unique_ptr<Communicator> experts;   // expert_parallel_size ranks
  std::unique_ptr<Communicator> replicas;  // world.size() / expert_parallel_size ranks
};
ExpertParallelGroups split_expert_parallel(Communicator& world, int expert_parallel_size);

// Builds the backend asked for. MPI is initialised here if the caller has not done it,
// and is then finalised at exit; a caller that initialised MPI keeps that job.
std::unique_ptr<Communicator> make_communicator(CommBackend backend = CommBackend::Auto);

}  // namespace moe
