#include "token_exchange.hpp"

namespace moe {

TokenExchange::TokenExchange(Communicator& comm, kernels::Ops& ops, Transport& transport, std::int64_t hidden_dim,
                             std::int64_t local_experts, Traffic traffic, bool separate_waits)
    : comm_(comm),
      ops_(ops),
      transport_(transport),
      hidden_(hidden_dim),
      local_experts_(local_experts),
      traffic_(traffic),
      separate_waits_(separate_waits),
      row_bytes_(sizeof(float) * static_cast<std::size_t>(hidden_dim)),
      send_rows_(ops),
      result_rows_(ops),
      row_token_(ops),
      token_offsets_(ops),
      token_rows_(ops) {}

void TokenExchange::wait_for_peers(PhaseTimes& times, PhaseClock& clock) {
  if (separate_waits_) comm_.barrier(), clock.lap(times.wait);
}

float* TokenExchange::gather_in_send_order(const float* token_rows) {
  // The own rows land straight in the middle of the span, where the experts read them.
  float* span = send_rows_.resize(static_cast<std::size_t>(rows_.total() * hidden_));
  ops_.gather_rows(token_rows, row_token_.data(), layout_.rows(), hidden_, span);
  return span;
}

ExpertRows TokenExchange::dispatch(const float* x, const Routing& routing, const DispatchPlan& plan,
                                   ExpertWorkspace& workspace, PhaseTimes& times, PhaseClock& clock) {
  const int P = comm_.size(), rank = comm_.rank();
  const auto peers = static_cast<std::size_t>(P);
  layout_ = make_send_layout(plan, routing.indices.data(), routing.weights.data(), P, rank, traffic_);
  row_token_.upload(layout_.row_token);
  clock.lap(times.plan);

  wait_for_peers(times, clock);
  // 2. Counts: rows and assignments for every peer, so each rank knows what arrives.
  std::vector<std::int64_t> send_counts(2 * peers), recv_counts(2 * peers);
  for (std::size_t p = 0; p < peers; ++p) {
    send_counts[2 * p] = layout_.rows_per_rank[p];
    send_counts[2 * p + 1] = layout_.assignments_per_rank[p];
  }
  comm_.all_to_all(send_counts.data(), recv_counts.data(), 2);
  recv_row_counts_.assign(peers, 0);
  recv_assignment_counts_.assign(peers, 0);
  for (std::size_t p = 0; p < peers; ++p) {
    recv_row_counts_[p] = recv_counts[2 * p];
    recv_assignment_counts_[p] = recv_counts[2 * p + 1];
  }
  // Where the rows and the assignments live during the exchange: own rows stay put.
  rows_ = make_exchange_span(layout_.rows_per_rank, recv_row_counts_, rank);
  assignments_ = make_exchange_span(layout_.assignments_per_rank, recv_assignment_counts_, rank);
  clock.lap(times.dispatch);

  // 3. Dispatch: the rows packed by destination, then sent with their assignment
  // records, together: one wait for the peers.
  float* span = gather_in_send_order(x);
  clock.lap(times.pack);
  wait_for_peers(times, clock);
  const Transport::Rows dispatched{span, layout_.rows_per_rank.data(), span + rows_.owner_side_begin() * hidden_,
                                   recv_row_counts_.data(), row_bytes_};
  const std::vector<AssignmentRecord> records =
      metadata_to_owners(transport_, assignments_, layout_.assignments, layout_.assignments_per_rank.data(),
                         recv_assignment_counts_.data(), &dispatched);
  clock.lap(times.dispatch);

  // 4. Regroup by local expert: the owner's plan over the rows it received.
  work_ = received_assignments(records.data(), static_cast<std::int64_t>(records.size()),
                               rows_.own + rows_.owner_side, local_experts_);
  group_by_expert(work_, grouping_);
  result_rows_.resize(static_cast<std::size_t>(rows_.total() * hidden_));
  return load_plan(work_, grouping_, workspace);
}

const float* TokenExchange::received_rows() const { return send_rows_.data() + rows_.owner_view() * hidden_; }
float* TokenExchange::result_rows() { return result_rows_.data() + rows_.owner_view() * hidden_; }

void TokenExchange::return_and_combine(std::int64_t tokens, float* output, PhaseTimes& times, PhaseClock& clock) {
  // 6. The results back, the reverse of step 3: they land before the own rows' results,
  // so that [sender side | own] is every row in the send layout's order.
  wait_for_peers(times, clock);
  float* out_span = result_rows_.data();
  transport_.exchange_with_others(out_span + rows_.owner_side_begin() * hidden_, recv_row_counts_.data(), out_span,
                                  layout_.rows_per_rank.data(), row_bytes_);
  clock.lap(times.send_back);
  // 7. Each token's output is the sum of the rows that come back for it.
  ops_.combine_rows(out_span + rows_.sender_view() * hidden_, hidden_, tokens,
                    token_offsets_.upload(layout_.token_offsets), token_rows_.upload(layout_.token_rows), nullptr,
                    output);
  clock.lap(times.combine);
}

void TokenExchange::count_traffic(ForwardStats& stats) const {
  const auto peers = static_cast<std::size_t>(comm_.size());
  for (std::size_t p = 0; p < peers; ++p) {
    stats.rows_sent[p] = layout_.rows_per_rank[p];
    stats.rows_received[p] = recv_row_counts_[p];
    if (static_cast<int>(p) == comm_.rank()) continue;  // a local copy, not on the wire
    stats.bytes_sent += layout_.rows_per_rank[p] * static_cast<std::int64_t>(row_bytes_);
    stats.metadata_bytes_sent +=
        layout_.assignments_per_rank[p] * static_cast<std::int64_t>(sizeof(AssignmentRecord));
  }
}

void TokenExchange::dispatch_gradient(const float* grad_output, PhaseTimes& times, PhaseClock& clock) {
  // ∂L/∂(a returned row) is the gradient of its token's output: to the owners, as the
  // forward dispatched the tokens, through the same span.
  float* span = gather_in_send_order(grad_output);
  clock.lap(times.pack);
  wait_for_peers(times, clock);
  transport_.exchange_with_others(span, layout_.rows_per_rank.data(), span + rows_.owner_side_begin() * hidden_,
                                  recv_row_counts_.data(), row_bytes_);
  clock.lap(times.dispatch);
}

const float* TokenExchange::gradient_rows() const { return received_rows(); }
float* TokenExchange::input_gradient_rows() { return result_rows(); }

void TokenExchange::return_gradient(const Buffer<float>& d_weights, std::int64_t tokens, std::int64_t top_k,
                                    float* dx, float* d_slot, PhaseTimes& times, PhaseClock& clock) {
  // Back to the tokens' ranks: the rows' gradients and every assignment's weight
  // gradient, in one exchange.
  wait_for_peers(times, clock);
  float* d_span = result_rows_.data();
  const std::vector<float> dw_here = d_weights.download();
  const Transport::Rows returned{d_span + rows_.owner_side_begin() * hidden_, recv_row_counts_.data(), d_span,
                                 layout_.rows_per_rank.data(), row_bytes_};
  const std::vector<float> dw_back =
      metadata_to_senders(transport_, assignments_, dw_here.data(), recv_assignment_counts_.data(),
                          layout_.assignments_per_rank.data(), &returned);
  clock.lap(times.send_back);
  ops_.combine_rows(d_span + rows_.sender_view() * hidden_, hidden_, tokens,
                    token_offsets_.upload(layout_.token_offsets), token_rows_.upload(layout_.token_rows), nullptr,
                    dx);
  std::vector<float> host_d_slot(static_cast<std::size_t>(tokens * top_k), 0.0f);
  for (std::size_t a = 0; a < dw_back.size(); ++a)
    host_d_slot[static_cast<std::size_t>(layout_.assignment_slot[a])] = dw_back[a];
  ops_.copy_from_host(d_slot, host_d_slot.data(), sizeof(float) * host_d_slot.size());
  clock.lap(times.combine);
}

}  // namespace moe
