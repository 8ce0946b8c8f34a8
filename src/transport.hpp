// Moves the layer's payload (token rows, the gate's gradient) between ranks for any
// pairing of compute backend and communicator: directly when the communicator takes
// the memory the ops compute in, through host copies when a GPU layer runs over a
// host-memory transport (MPI; e.g. two ranks sharing one GPU, which NCCL refuses).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/ops.hpp"
#include "moe/communicator.hpp"

namespace moe {

class Transport {
 public:
  Transport(Communicator& comm, kernels::Ops& ops);
  // Throws if the pairing cannot work (a CPU layer over a device-memory communicator);
  // the constructor only records it, so that ranks can agree before throwing.
  void check() const;

  // Rows of row_bytes, in the ops' memory, packed by peer (Communicator::all_to_allv),
  // this rank's own block left out on both sides: send holds the blocks for the other
  // ranks in rank order and recv receives theirs likewise (send_rows and recv_rows are
  // indexed by rank; their own entries are ignored). A rank's own rows never move:
  // see ExchangeSpan.
  void exchange_with_others(const void* send, const std::int64_t* send_rows, void* recv,
                            const std::int64_t* recv_rows, std::size_t row_bytes);
  // The same for host metadata of type T, over the host collectives.
  template <class T>
  void exchange_host_with_others(const T* send, const std::int64_t* send_counts, T* recv,
                                 const std::int64_t* recv_counts) {
    comm_.all_to_allv(send, others_only(send_counts), recv, others_only(recv_counts, 1), sizeof(T));
  }
  // Rows as exchange_with_others takes them (the counts with every rank's entry).
  using Rows = Communicator::RowExchange;
  // exchange_with_others(rows) and exchange_host_with_others(metadata) in flight at once
  // (Communicator::all_to_allv_pair) where the communicator moves host memory; over a
  // device-memory communicator (NCCL) one after the other.
  template <class T>
  void exchange_with_others(const Rows& rows, const T* send, const std::int64_t* send_counts, T* recv,
                            const std::int64_t* recv_counts) {
    exchange_pair(rows, send, send_counts, recv, recv_counts, sizeof(T));
  }
  // Two such exchanges in the ops' memory (rows and their records, or their gradients
  // and the weights' gradients) in flight at once where the communicator moves host
  // memory (through host copies for a GPU layer); one after the other over NCCL.
  void exchange_with_others(const Rows& first, const Rows& second);
  // In-place sum over ranks of n floats in the ops' memory.
  void all_reduce_sum(float* data, std::int64_t n);

  bool staged() const { return staged_; }

 private:
  template <class Exchange>
  void rows_through_host(const Rows& rows, const std::int64_t* to, const std::int64_t* from, Exchange&& exchange);
  void exchange_pair(const Rows& rows, const void* send, const std::int64_t* send_counts, void* recv,
                     const std::int64_t* recv_counts, std::size_t bytes);
  // counts with this rank's own entry zeroed (slot 0 to 3 of four scratch arrays).
  const std::int64_t* others_only(const std::int64_t* counts, int slot = 0);

  Communicator& comm_;
  kernels::Ops& ops_;
  bool staged_;
  std::string problem_;
  std::vector<char> host_send_, host_recv_, host_send_second_, host_recv_second_;
  std::vector<std::int64_t> counts_[4];
};

// One buffer for an exchange in which a rank's own rows stay where they are
// (docs/design.md §2): three parts, in rows,
//   [ the other ranks' rows, sender's side | own rows | the other ranks' rows, owner's side ]
// The first two parts, in that order, are the rows of the send layout (for each other
// rank, then its own); the last two are the rows as their owner sees them (its own,
// then those from each other rank). The exchange moves rows between the outer parts,
// one way for the dispatch and the other way back; the own rows are never copied.
struct ExchangeSpan {
  std::int64_t sender_side = 0, own = 0, owner_side = 0;

  std::int64_t total() const { return sender_side + own + owner_side; }
  std::int64_t sender_view() const { return 0; }            // [sender side | own]
  std::int64_t owner_view() const { return sender_side; }   // [own | owner side]
  std::int64_t owner_side_begin() const { return sender_side + own; }
};

// The span of an exchange with send[p] rows for rank p and recv[p] from it.
ExchangeSpan make_exchange_span(const std::vector<std::int64_t>& send, const std::vector<std::int64_t>& recv,
                                int own_rank);

// Host metadata (a value per row or per assignment) along an ExchangeSpan: from the
// send layout's order to the owners' order [own | from the others].
// With `rows`, the exchange of those rows travels with it (Transport's pair).
template <class T>
std::vector<T> metadata_to_owners(Transport& transport, const ExchangeSpan& span, const std::vector<T>& in_send_order,
                                  const std::int64_t* send_counts, const std::int64_t* recv_counts,
                                  const Transport::Rows* rows = nullptr) {
  std::vector<T> all(static_cast<std::size_t>(span.total()));
  std::copy(in_send_order.begin(), in_send_order.end(), all.begin());
  if (rows)
    transport.exchange_with_others(*rows, all.data(), send_counts, all.data() + span.owner_side_begin(), recv_counts);
  else
    transport.exchange_host_with_others(all.data(), send_counts, all.data() + span.owner_side_begin(), recv_counts);
  all.erase(all.begin(), all.begin() + span.owner_view());
  return all;
}

}  // namespace moe
