#include "peer_counts.hpp"

#include <string>

#include "moe/error.hpp"

namespace moe {

std::vector<std::int64_t> peer_count_messages(const std::vector<std::int64_t>& rows_per_rank,
                                              const std::vector<std::int64_t>& assignments_per_rank,
                                              const std::int64_t* kept_per_expert, std::int64_t local_experts,
                                              std::string& inconsistency) {
  const std::size_t peers = rows_per_rank.size(), E_local = static_cast<std::size_t>(local_experts);
  const std::size_t per_peer = 2 + E_local;
  std::vector<std::int64_t> messages(per_peer * peers);
  inconsistency.clear();
  for (std::size_t p = 0; p < peers; ++p) {
    std::int64_t* message = messages.data() + per_peer * p;
    message[0] = rows_per_rank[p];
    message[1] = assignments_per_rank[p];
    std::int64_t kept = 0;
    for (std::size_t e = 0; e < E_local; ++e) {
      message[2 + e] = kept_per_expert[p * E_local + e];
      kept += message[2 + e];
    }
    if (kept != assignments_per_rank[p] && inconsistency.empty())
      inconsistency = "the plan sends rank " + std::to_string(p) + " " + std::to_string(assignments_per_rank[p]) +
                      " assignment records but counts " + std::to_string(kept) +
                      " kept for its experts (an internal error)";
  }
  if (!inconsistency.empty())
    for (std::size_t p = 0; p < peers; ++p) messages[per_peer * p + 1] = kInconsistentCounts;
  return messages;
}

PeerCounts read_peer_counts(const std::vector<std::int64_t>& received, int peers, std::int64_t local_experts) {
  const std::size_t P = static_cast<std::size_t>(peers), E_local = static_cast<std::size_t>(local_experts);
  const std::size_t per_peer = 2 + E_local;
  for (std::size_t p = 0; p < P; ++p)
    if (received[per_peer * p + 1] == kInconsistentCounts)
      throw CollectiveError("TokenExchange: rank " + std::to_string(p) +
                            "'s dispatch plan was inconsistent (an internal error); every rank stops");
  PeerCounts counts;
  counts.rows.resize(P);
  counts.assignments.resize(P);
  counts.local_rows_per_expert.assign(E_local, 0);
  for (std::size_t p = 0; p < P; ++p) {
    counts.rows[p] = received[per_peer * p];
    counts.assignments[p] = received[per_peer * p + 1];
    for (std::size_t e = 0; e < E_local; ++e) counts.local_rows_per_expert[e] += received[per_peer * p + 2 + e];
  }
  return counts;
}

}  // namespace moe
