// The NCCL backend: token rows and the gate's gradient move device to device over
// NCCL (grouped ncclSend/ncclRecv for the all-to-allv, ncclAllReduce), on one stream;
// everything small and host-side — counts, metadata, checks — goes over MPI, which
// also carries NCCL's unique id from rank 0 to the others.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "check.hpp"
#include "comm/backends.hpp"

namespace moe::comm {
namespace {

struct Nccl {
  static constexpr const char* library = "NCCL";
  static bool ok(ncclResult_t r) { return r == ncclSuccess; }
  static std::string name(ncclResult_t r) { return ncclGetErrorString(r); }
};

struct CudaRuntime {
  static constexpr const char* library = "CUDA";
  static bool ok(cudaError_t e) { return e == cudaSuccess; }
  static std::string name(cudaError_t e) { return cudaGetErrorName(e); }
};

ncclDataType_t nccl_type(DataType type) {
  switch (type) {
    case DataType::Int32: return ncclInt32;
    case DataType::Int64: return ncclInt64;
    case DataType::Float32: return ncclFloat32;
    case DataType::Float64: return ncclFloat64;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Max: return ncclMax;
    case ReduceOp::Min: return ncclMin;
  }
  return ncclSum;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator() : NcclCommunicator(make_mpi_world()) {}
  // Over the ranks of `host` (MPI), each on the GPU its node view picks: for a group
  // split from another communicator, the GPU that one uses (split keeps the view).
  explicit NcclCommunicator(std::unique_ptr<Communicator> host) : host_(std::move(host)) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
    MOE_CHECK_ARG(devices > 0, "make_communicator", "backend = nccl needs a GPU, and rank ", host_->rank(),
                  " sees none");
    MOE_CHECK_ARG(host_->local_size() <= devices, "make_communicator", "backend = nccl: ", host_->local_size(),
                  " ranks share this node's ", devices,
                  " GPU(s), and NCCL needs a GPU per rank; use backend = mpi (moe then moves GPU rows through "
                  "host memory) or fewer ranks per node");
    device_ = host_->local_rank() % devices;
    MOE_CHECK(CudaRuntime, cudaSetDevice(device_));
    ncclUniqueId id{};
    if (host_->rank() == 0) MOE_CHECK(Nccl, ncclGetUniqueId(&id));
    host_->broadcast(&id, sizeof id, 0);
    MOE_CHECK(Nccl, ncclCommInitRank(&comm_, host_->size(), id, host_->rank()));
    MOE_CHECK(CudaRuntime, cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }

  ~NcclCommunicator() override {
    if (comm_ && ncclCommDestroy(comm_) != ncclSuccess) std::fprintf(stderr, "moe: ncclCommDestroy failed\n");
    if (stream_ && cudaStreamDestroy(stream_) != cudaSuccess) std::fprintf(stderr, "moe: cudaStreamDestroy failed\n");
  }

  CommBackend backend() const override { return CommBackend::NCCL; }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  int local_rank() const override { return host_->local_rank(); }
  int local_size() const override { return host_->local_size(); }

  void all_to_all(const std::int64_t* send, std::int64_t* recv, int n) override { host_->all_to_all(send, recv, n); }
  void all_to_allv(const void* send, const std::int64_t* send_rows, void* recv, const std::int64_t* recv_rows,
                   std::size_t row_bytes) override {
    host_->all_to_allv(send, send_rows, recv, recv_rows, row_bytes);
  }
  void all_to_allv_pair(const RowExchange& first, const RowExchange& second) override {
    host_->all_to_allv_pair(first, second);
  }
  void all_reduce(void* data, std::int64_t count, DataType type, ReduceOp op) override {
    host_->all_reduce(data, count, type, op);
  }
  void broadcast(void* data, std::size_t bytes, int root) override { host_->broadcast(data, bytes, root); }
  void barrier() override { host_->barrier(); }
  const void* native_handle() const override { return host_->native_handle(); }

  MemorySpace payload_memory() const override { return MemorySpace::Device; }

  // A new NCCL communicator over the MPI group split alongside (its unique id travels
  // over that group), on the same GPU.
  std::unique_ptr<Communicator> split(int color, int key) override {
    return std::make_unique<NcclCommunicator>(host_->split(color, key));
  }

  void all_to_allv_payload(const void* send, const std::int64_t* send_rows, void* recv, const std::int64_t* recv_rows,
                           std::size_t row_bytes) override {
    const auto* out = static_cast<const char*>(send);
    auto* in = static_cast<char*>(recv);
    MOE_CHECK(Nccl, ncclGroupStart());
    for (int p = 0; p < size(); ++p) {
      const std::size_t send_bytes = static_cast<std::size_t>(send_rows[p]) * row_bytes;
      const std::size_t recv_bytes = static_cast<std::size_t>(recv_rows[p]) * row_bytes;
      if (send_bytes) MOE_CHECK(Nccl, ncclSend(out, send_bytes, ncclUint8, p, comm_, stream_));
      if (recv_bytes) MOE_CHECK(Nccl, ncclRecv(in, recv_bytes, ncclUint8, p, comm_, stream_));
      out += send_bytes;
      in += recv_bytes;
    }
    MOE_CHECK(Nccl, ncclGroupEnd());
    MOE_CHECK(CudaRuntime, cudaStreamSynchronize(stream_));
  }

  void all_reduce_payload(void* data, std::int64_t count, DataType type, ReduceOp op) override {
    MOE_CHECK(Nccl, ncclAllReduce(data, data, static_cast<std::size_t>(count), nccl_type(type), nccl_op(op), comm_,
                                  stream_));
    MOE_CHECK(CudaRuntime, cudaStreamSynchronize(stream_));
  }

  [[noreturn]] void abort(const std::string& message, int exit_code) noexcept override {
    host_->abort(message, exit_code);
    std::_Exit(exit_code);  // not reached: the host communicator ends the job
  }

 private:
  std::unique_ptr<Communicator> host_;
  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl() { return std::make_unique<NcclCommunicator>(); }

}  // namespace moe::comm
