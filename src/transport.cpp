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

// The rows as exchange(send, recv) moves them: in the ops' memory when the communicator
// takes it, else (a GPU layer over a host-memory communicator) through host copies.
template <class Exchange>
void Transport::rows_through_host(const Rows& rows, const std::int64_t* to, const std::int64_t* from,
                                  Exchange&& exchange) {
  if (!staged_) {
    ops_.synchronize();  // the rows must be complete before another stream or process reads them
    exchange(rows.send, rows.recv);
    return;
  }
  std::int64_t sent = 0, received = 0;
  for (int p = 0; p < comm_.size(); ++p) sent += to[p], received += from[p];
  host_send_.resize(static_cast<std::size_t>(sent) * rows.row_bytes);
  host_recv_.resize(static_cast<std::size_t>(received) * rows.row_bytes);
  if (sent) ops_.copy_to_host(host_send_.data(), rows.send, host_send_.size());
  exchange(host_send_.data(), host_recv_.data());
  if (received) ops_.copy_from_host(rows.recv, host_recv_.data(), host_recv_.size());
}

void Transport::exchange_with_others(const void* send, const std::int64_t* send_rows, void* recv,
                                     const std::int64_t* recv_rows, std::size_t row_bytes) {
  const std::int64_t* to = others_only(send_rows, 0);
  const std::int64_t* from = others_only(recv_rows, 1);
  rows_through_host({send, send_rows, recv, recv_rows, row_bytes}, to, from, [&](const void* out, void* in) {
    comm_.all_to_allv_payload(out, to, in, from, row_bytes);
  });
}

void Transport::exchange_pair(const Rows& rows, const void* send, const std::int64_t* send_counts, void* recv,
                              const std::int64_t* recv_counts, std::size_t bytes) {
  const Communicator::RowExchange metadata{send, others_only(send_counts, 2), recv, others_only(recv_counts, 3), bytes};
  if (comm_.payload_memory() == MemorySpace::Device) {  // rows on the device, metadata on the host: one by one
    exchange_with_others(rows.send, rows.send_rows, rows.recv, rows.recv_rows, rows.row_bytes);
    comm_.all_to_allv(metadata.send, metadata.send_rows, metadata.recv, metadata.recv_rows, bytes);
    return;
  }
  const std::int64_t* to = others_only(rows.send_rows, 0);
  const std::int64_t* from = others_only(rows.recv_rows, 1);
  rows_through_host(rows, to, from, [&](const void* out, void* in) {
    comm_.all_to_allv_pair({out, to, in, from, rows.row_bytes}, metadata);
  });
}

void Transport::exchange_with_others(const Rows& first, const Rows& second) {
  if (comm_.payload_memory() == MemorySpace::Device) {
    exchange_with_others(first.send, first.send_rows, first.recv, first.recv_rows, first.row_bytes);
    exchange_with_others(second.send, second.send_rows, second.recv, second.recv_rows, second.row_bytes);
    return;
  }
  Rows a{first.send, others_only(first.send_rows, 0), first.recv, others_only(first.recv_rows, 1), first.row_bytes};
  Rows b{second.send, others_only(second.send_rows, 2), second.recv, others_only(second.recv_rows, 3),
         second.row_bytes};
  if (!staged_) {
    ops_.synchronize();  // complete before another process reads them
    comm_.all_to_allv_pair(a, b);
    return;
  }
  // A GPU layer over a host-memory communicator: both through host copies, with one
  // wait for both downloads (the later copy lands with the other's wait).
  auto bytes = [&](const std::int64_t* counts, std::size_t row_bytes) {
    std::int64_t rows = 0;
    for (int p = 0; p < comm_.size(); ++p) rows += counts[p];
    return static_cast<std::size_t>(rows) * row_bytes;
  };
  host_send_.resize(bytes(a.send_rows, a.row_bytes));
  host_recv_.resize(bytes(a.recv_rows, a.row_bytes));
  host_send_second_.resize(bytes(b.send_rows, b.row_bytes));
  host_recv_second_.resize(bytes(b.recv_rows, b.row_bytes));
  if (!host_send_second_.empty()) ops_.copy_to_host_later(host_send_second_.data(), b.send, host_send_second_.size());
  if (!host_send_.empty())
    ops_.copy_to_host(host_send_.data(), a.send, host_send_.size());
  else
    ops_.synchronize();
  void* const first_recv = a.recv;
  void* const second_recv = b.recv;
  a.send = host_send_.data(), a.recv = host_recv_.data();
  b.send = host_send_second_.data(), b.recv = host_recv_second_.data();
  comm_.all_to_allv_pair(a, b);
  if (!host_recv_.empty()) ops_.copy_from_host(first_recv, host_recv_.data(), host_recv_.size());
  if (!host_recv_second_.empty()) ops_.copy_from_host(second_recv, host_recv_second_.data(), host_recv_second_.size());
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
