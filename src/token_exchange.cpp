#include "token_exchange.hpp"

#include <string>
#include <utility>

#include "moe/error.hpp"
#include "peer_counts.hpp"

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
      token_rows_(ops),
      assignment_slot_(ops),
      send_records_(ops),
      owner_records_(ops),
      weight_grads_back_(ops) {}

void TokenExchange::wait_for_peers(PhaseTimes& times, PhaseClock& clock) {
  if (separate_waits_) comm_.barrier(), clock.lap(times.wait);
}

float* TokenExchange::gather_in_send_order(const float* token_rows) {
  // The own rows land straight in the middle of the span, where the experts read them.
  float* span = send_rows_.resize(static_cast<std::size_t>(rows_.total() * hidden_));
  ops_.gather_rows(token_rows, row_token_.data(), rows_.sender_side + rows_.own, hidden_, span);
  return span;
}

void TokenExchange::exchange_counts(const std::int64_t* kept_per_expert) {
  std::string inconsistency;
  const std::vector<std::int64_t> messages = peer_count_messages(
      layout_.rows_per_rank, layout_.assignments_per_rank, kept_per_expert, local_experts_, inconsistency);
  std::vector<std::int64_t> received(messages.size());
  comm_.all_to_all(messages.data(), received.data(), static_cast<int>(2 + local_experts_));
  // Every rank throws when any sender's counts were inconsistent (peer_counts.hpp).
  if (!inconsistency.empty()) throw CollectiveError("TokenExchange: " + inconsistency);
  PeerCounts counts = read_peer_counts(received, comm_.size(), local_experts_);
  recv_row_counts_ = std::move(counts.rows);
  recv_assignment_counts_ = std::move(counts.assignments);
  local_rows_per_expert_ = std::move(counts.local_rows_per_expert);
  // Where the rows and the assignments live during the exchange: own rows stay put.
  rows_ = make_exchange_span(layout_.rows_per_rank, recv_row_counts_, comm_.rank());
  assignments_ = make_exchange_span(layout_.assignments_per_rank, recv_assignment_counts_, comm_.rank());
}

ExpertRows TokenExchange::dispatch(const float* x, const Routing& routing, const DispatchPlan& plan,
                                   ExpertWorkspace& workspace, PhaseTimes& times, PhaseClock& clock) {
  layout_ = make_send_layout(plan, routing.indices.data(), routing.weights.data(), comm_.size(), comm_.rank(), traffic_);
  row_token_.upload(layout_.row_token);
  token_offsets_.upload(layout_.token_offsets);
  token_rows_.upload(layout_.token_rows);
  assignment_slot_.upload(layout_.assignment_slot);
  clock.lap(times.plan);

  wait_for_peers(times, clock);
  exchange_counts(plan.kept_per_expert.data());
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

void TokenExchange::plan_where_routed(const std::int32_t* indices, const float* weights, std::int64_t tokens,
                                      std::int64_t top_k, std::int64_t experts, std::int64_t capacity,
                                      std::int64_t* host_kept_per_expert) {
  const auto n = static_cast<std::size_t>(tokens * top_k), peers = static_cast<std::size_t>(comm_.size());
  layout_ = SendLayout{};
  layout_.own_rank = comm_.rank();
  layout_.rows_per_rank.assign(peers, 0);
  layout_.assignments_per_rank.assign(peers, 0);
  ops_.plan_send(indices, weights, tokens, top_k, experts, capacity, comm_.size(), comm_.rank(),
                 traffic_ == Traffic::Deduplicated,
                 kernels::SendPlan{row_token_.resize(n), send_records_.resize(n), assignment_slot_.resize(n),
                                   token_offsets_.resize(static_cast<std::size_t>(tokens + 1)), token_rows_.resize(n),
                                   layout_.rows_per_rank.data(), layout_.assignments_per_rank.data(),
                                   host_kept_per_expert});
}

ExpertRows TokenExchange::dispatch_planned(const float* x, const std::vector<std::int64_t>& kept_per_expert,
                                           ExpertWorkspace& workspace, PhaseTimes& times, PhaseClock& clock) {
  wait_for_peers(times, clock);
  exchange_counts(kept_per_expert.data());
  clock.lap(times.dispatch);

  // 3. The rows and their records, as the host plan sends them; the records arrive in
  // the owner's order, its own first (copied, not sent), then the other ranks'.
  float* span = gather_in_send_order(x);
  const std::int64_t owner_records = assignments_.own + assignments_.owner_side;
  AssignmentRecord* received = owner_records_.resize(static_cast<std::size_t>(owner_records));
  ops_.copy(received, send_records_.data() + assignments_.sender_side,
            sizeof(AssignmentRecord) * static_cast<std::size_t>(assignments_.own));
  clock.lap(times.pack);
  wait_for_peers(times, clock);
  transport_.exchange_with_others(
      Transport::Rows{span, layout_.rows_per_rank.data(), span + rows_.owner_side_begin() * hidden_,
                      recv_row_counts_.data(), row_bytes_},
      Transport::Rows{send_records_.data(), layout_.assignments_per_rank.data(), received + assignments_.own,
                      recv_assignment_counts_.data(), sizeof(AssignmentRecord)});
  clock.lap(times.dispatch);

  // 4. The owner's plan over the received rows, where they are.
  const std::int64_t rows = rows_.own + rows_.owner_side;
  const auto A = static_cast<std::size_t>(owner_records);
  ops_.plan_received(received, owner_records, rows, local_experts_,
                     kernels::ReceivedPlan{workspace.gather_rows.resize(A),
                                           workspace.combine_offsets.resize(static_cast<std::size_t>(rows + 1)),
                                           workspace.combine_sources.resize(A), workspace.combine_weights.resize(A)});
  result_rows_.resize(static_cast<std::size_t>(rows_.total() * hidden_));
  ExpertRows expert_rows;
  expert_rows.output_rows = rows;
  expert_rows.entries = owner_records;
  expert_rows.expert_offsets.assign(local_rows_per_expert_.size() + 1, 0);
  for (std::size_t e = 0; e < local_rows_per_expert_.size(); ++e)
    expert_rows.expert_offsets[e + 1] = expert_rows.expert_offsets[e] + local_rows_per_expert_[e];
  return expert_rows;
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
  ops_.combine_rows(out_span + rows_.sender_view() * hidden_, hidden_, tokens, token_offsets_.data(),
                    token_rows_.data(), nullptr, output);
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
  // gradient, in one exchange. The weights' gradients are in the owner's order (its own
  // records first): the own ones are copied to the end of the send order, where the
  // own records stand, and the others' arrive before them.
  wait_for_peers(times, clock);
  float* d_span = result_rows_.data();
  const std::int64_t own = assignments_.own, sent = assignments_.sender_side + own;
  float* weights_back = weight_grads_back_.resize(static_cast<std::size_t>(sent));
  ops_.copy(weights_back + assignments_.sender_side, d_weights.data(), sizeof(float) * static_cast<std::size_t>(own));
  transport_.exchange_with_others(
      Transport::Rows{d_span + rows_.owner_side_begin() * hidden_, recv_row_counts_.data(), d_span,
                      layout_.rows_per_rank.data(), row_bytes_},
      Transport::Rows{d_weights.data() + own, recv_assignment_counts_.data(), weights_back,
                      layout_.assignments_per_rank.data(), sizeof(float)});
  clock.lap(times.send_back);
  ops_.combine_rows(d_span + rows_.sender_view() * hidden_, hidden_, tokens, token_offsets_.data(), token_rows_.data(),
                    nullptr, dx);
  // Each record's weight gradient to its slot; dropped slots get 0.
  ops_.fill_zero(d_slot, sizeof(float) * static_cast<std::size_t>(tokens * top_k));
  ops_.scatter(weights_back, assignment_slot_.data(), sent, d_slot);
  clock.lap(times.combine);
}

}  // namespace moe
