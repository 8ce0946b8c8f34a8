#include "transport.hpp"

#include "moe/error.hpp"

namespace moe {

Transport::Transport(Communicator& comm, kernels::Ops& ops) : comm_(comm), ops_(ops) {
  const bool device_ops = ops.backend() == kernels::Backend::CUDA;
  const bool device_payload = comm.payload_memory() == MemorySpace::Device;
  if (!device_ops && device_payload)
    problem_ = detail::concat("MoELayer: the communicator (", comm_backend_name(comm.backend()),
                              ") moves device memory but the layer computes on the CPU; use options.device = "
                              "Device::CUDA, or an MPI or local communicator");
  staged_ = device_ops && !device_payload;
}

void Transport::check() const {
  if (!problem_.empty()) throw Error(problem_);
}

void Transport::all_to_allv(const void* send, const std::int64_t* send_rows, void* recv,
                            const std::int64_t* recv_rows, std::size_t row_bytes) {
  if (!staged_) {
    ops_.synchronize();  // the rows must be complete before another stream or process reads them
    comm_.all_to_allv_payload(send, send_rows, recv, recv_rows, row_bytes);
    return;
  }
  std::int64_t sent = 0, received = 0;
  for (int p = 0; p < comm_.size(); ++p) sent += send_rows[p], received += recv_rows[p];
  host_send_.resize(static_cast<std::size_t>(sent) * row_bytes);
  host_recv_.resize(static_cast<std::size_t>(received) * row_bytes);
  if (sent) ops_.copy_to_host(host_send_.data(), send, host_send_.size());
  comm_.all_to_allv(host_send_.data(), send_rows, host_recv_.data(), recv_rows, row_bytes);
  if (received) ops_.copy_from_host(recv, host_recv_.data(), host_recv_.size());
}

void Transport::all_reduce_sum(float* data, std::int64_t n) {
  if (!staged_) {
    ops_.synchronize();
    comm_.all_reduce_payload(data, n, DataType::Float32, ReduceOp::Sum);
    return;
  }
  host_send_.resize(static_cast<std::size_t>(n) * sizeof(float));
  ops_.copy_to_host(host_send_.data(), data, host_send_.size());
  comm_.all_reduce(host_send_.data(), n, DataType::Float32, ReduceOp::Sum);
  ops_.copy_from_host(data, host_send_.data(), host_send_.size());
}

}  // namespace moe
