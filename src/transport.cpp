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

const std::int64_t* Transport::others_only(const std::int64_t* counts, int slot) {
  std::vector<std::int64_t>& out = counts_[slot];
  out.assign(counts, counts + comm_.size());
  out[static_cast<std::size_t>(comm_.rank())] = 0;
  return out.data();
}

void Transport::exchange_with_others(const void* send, const std::int64_t* send_rows, void* recv,
                                     const std::int64_t* recv_rows, std::size_t row_bytes) {
  const std::int64_t* to = others_only(send_rows, 0);
  const std::int64_t* from = others_only(recv_rows, 1);
  if (!staged_) {
    ops_.synchronize();  // the rows must be complete before another stream or process reads them
    comm_.all_to_allv_payload(send, to, recv, from, row_bytes);
    return;
  }
  std::int64_t sent = 0, received = 0;
  for (int p = 0; p < comm_.size(); ++p) sent += to[p], received += from[p];
  host_send_.resize(static_cast<std::size_t>(sent) * row_bytes);
  host_recv_.resize(static_cast<std::size_t>(received) * row_bytes);
  if (sent) ops_.copy_to_host(host_send_.data(), send, host_send_.size());
  comm_.all_to_allv(host_send_.data(), to, host_recv_.data(), from, row_bytes);
  if (received) ops_.copy_from_host(recv, host_recv_.data(), host_recv_.size());
}

void Transport::exchange_pair(const Rows& rows, const void* send, const std::int64_t* send_counts, void* recv,
                              const std::int64_t* recv_counts, std::size_t bytes) {
  if (!staged_ && comm_.payload_memory() == MemorySpace::Device) {  // rows on the device, metadata on the host
    exchange_with_others(rows.send, rows.send_rows, rows.recv, rows.recv_rows, rows.row_bytes);
    comm_.all_to_allv(send, others_only(send_counts, 2), recv, others_only(recv_counts, 3), bytes);
    return;
  }
  const std::int64_t* to = others_only(rows.send_rows, 0);
  const std::int64_t* from = others_only(rows.recv_rows, 1);
  const Communicator::RowExchange metadata{send, others_only(send_counts, 2), recv, others_only(recv_counts, 3), bytes};
  if (!staged_) {
    comm_.all_to_allv_pair({rows.send, to, rows.recv, from, rows.row_bytes}, metadata);
    return;
  }
  std::int64_t sent = 0, received = 0;
  for (int p = 0; p < comm_.size(); ++p) sent += to[p], received += from[p];
  host_send_.resize(static_cast<std::size_t>(sent) * rows.row_bytes);
  host_recv_.resize(static_cast<std::size_t>(received) * rows.row_bytes);
  if (sent) ops_.copy_to_host(host_send_.data(), rows.send, host_send_.size());
  comm_.all_to_allv_pair({host_send_.data(), to, host_recv_.data(), from, rows.row_bytes}, metadata);
  if (received) ops_.copy_from_host(rows.recv, host_recv_.data(), host_recv_.size());
}

void Transport::all_reduce_sum(float* data, std::int64_t n) {
  if (comm_.size() == 1) return;  // the sum over one rank: nothing to wait for or move
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

ExchangeSpan make_exchange_span(const std::vector<std::int64_t>& send, const std::vector<std::int64_t>& recv,
                                int own_rank) {
  ExchangeSpan span;
  for (std::size_t p = 0; p < send.size(); ++p) {
    if (static_cast<int>(p) == own_rank) continue;
    span.sender_side += send[p];
    span.owner_side += recv[p];
  }
  span.own = send[static_cast<std::size_t>(own_rank)];
  MOE_CHECK_ARG(recv[static_cast<std::size_t>(own_rank)] == span.own, "make_exchange_span", "rank ", own_rank,
                " sends itself ", span.own, " but receives ", recv[static_cast<std::size_t>(own_rank)]);
  return span;
}

}  // namespace moe
