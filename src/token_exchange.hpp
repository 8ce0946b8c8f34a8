// The expert-parallel exchange of docs/design.md §2 (P > 1): the send layout, the
// all-to-alls with the experts' owners, and the sum of the rows that come back — for the
// forward, and in reverse through the same layout for the backward. The rank's own
// experts run in between, on the rows it received (the layer calls run_experts and
// backward_experts there):
//   forward:  rows = dispatch(...); run_experts(rows, received_rows(), …, result_rows());
//             return_and_combine(output)
//   backward: dispatch_gradient(g); backward_experts(…, gradient_rows(), …,
//             input_gradient_rows(), d_weights); return_gradient(…)
#pragma once

#include <cstdint>
#include <vector>

#include "buffer.hpp"
#include "dispatch_plan.hpp"
#include "expert_compute.hpp"
#include "moe/layer.hpp"
#include "phase_clock.hpp"
#include "router.hpp"
#include "transport.hpp"

namespace moe {

class TokenExchange {
 public:
  TokenExchange(Communicator& comm, kernels::Ops& ops, Transport& transport, std::int64_t hidden_dim,
                std::int64_t local_experts, Traffic traffic, bool separate_waits);

  // Steps 2–4: lays out this rank's kept assignments by owner, tells every peer how many
  // rows and records arrive, sends the token rows with their records, and loads the
  // owner's plan over the received rows into `workspace`, which it returns.
  ExpertRows dispatch(const float* x, const Routing& routing, const DispatchPlan& plan, ExpertWorkspace& workspace,
                      PhaseTimes& times, PhaseClock& clock);
  // The same with the plan made where the routing lives (Ops::plan_send and
  // plan_received; docs/design.md §4b): plan_where_routed queues the sender's half
  // from the router's indices and weights [tokens·top_k] in the ops' memory, and its
  // counts (and host_kept_per_expert [E]) reach the host with the next wait;
  // dispatch_planned then exchanges the counts, the rows and their records and queues
  // the owner's half. No per-assignment data crosses to the host.
  void plan_where_routed(const std::int32_t* indices, const float* weights, std::int64_t tokens, std::int64_t top_k,
                         std::int64_t experts, std::int64_t capacity, std::int64_t* host_kept_per_expert);
  ExpertRows dispatch_planned(const float* x, const std::vector<std::int64_t>& kept_per_expert,
                              ExpertWorkspace& workspace, PhaseTimes& times, PhaseClock& clock);
  // The received rows the experts read, and where they write each one's result.
  const float* received_rows() const;
  float* result_rows();
  // Steps 6–7: the results back to their tokens' ranks, each token's rows summed into
  // output [tokens, H].
  void return_and_combine(std::int64_t tokens, float* output, PhaseTimes& times, PhaseClock& clock);
  // The last dispatch's traffic: rows per peer and the bytes that crossed the wire.
  void count_traffic(ForwardStats& stats) const;

  // The backward, through the last forward's layout: ∂L/∂output's rows to the owners,
  // as the tokens went; gradient_rows() are then ∂L/∂(each received row's result).
  void dispatch_gradient(const float* grad_output, PhaseTimes& times, PhaseClock& clock);
  const float* gradient_rows() const;
  float* input_gradient_rows();  // where the experts' backward writes ∂L/∂(received row)
  // Those back to the tokens' ranks, summed per token into dx [tokens, H]; every
  // assignment's ∂L/∂weight (d_weights: the owner's, per combine entry) into its slot
  // of d_slot [tokens · top_k] (0 where dropped). dx and d_slot in the ops' memory.
  void return_gradient(const Buffer<float>& d_weights, std::int64_t tokens, std::int64_t top_k, float* dx,
                       float* d_slot, PhaseTimes& times, PhaseClock& clock);

 private:
  void wait_for_peers(PhaseTimes& times, PhaseClock& clock);  // LayerOptions::separate_waits
  // The rows of the send layout's order, packed by destination into send_rows_.
  float* gather_in_send_order(const float* token_rows);
  // Step 2: every peer learns the rows and records it receives, and its experts' kept
  // counts (kept_per_expert [E], this rank's), whose sums over the senders are the
  // owner's rows per local expert. An inconsistent plan stops every rank
  // (peer_counts.hpp).
  void exchange_counts(const std::int64_t* kept_per_expert);

  Communicator& comm_;
  kernels::Ops& ops_;
  Transport& transport_;
  std::int64_t hidden_, local_experts_;
  Traffic traffic_;
  bool separate_waits_;
  std::size_t row_bytes_;

  // The last forward's layout, kept for its backward (planned where routed, only its
  // counts are on the host; its arrays are the buffers below either way).
  SendLayout layout_;
  std::vector<std::int64_t> recv_row_counts_, recv_assignment_counts_;  // [P]
  std::vector<std::int64_t> local_rows_per_expert_;                     // [local experts], summed over senders
  ExchangeSpan rows_, assignments_;
  ExpertAssignments work_;  // the owner's plan over the received rows (memory reused)
  ExpertGrouping grouping_;
  // The exchanges' ExchangeSpans: rows out (and in), and the experts' results (and
  // their gradients); the send layout's arrays in the ops' memory.
  Buffer<float> send_rows_, result_rows_;
  Buffer<std::int32_t> row_token_, token_offsets_, token_rows_, assignment_slot_;
  // Planned where routed: the records in the send order and as the owner has them, and
  // the weights' gradients back in the send order.
  Buffer<AssignmentRecord> send_records_, owner_records_;
  Buffer<float> weight_grads_back_;
};

}  // namespace moe
