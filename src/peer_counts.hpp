// Step 2 of the exchange (docs/design.md §2): the counts every rank sends each peer
// before the rows, so the peer knows what arrives. One all-to-all carries, per peer,
// [rows, assignment records, kept assignments for each of the peer's experts].
//
// The kept counts of a peer's experts must add up to the records sent to it: the plan
// makes both from the same routing, so a mismatch is an internal error. It is checked
// where the counts are made, by the sender, and the verdict travels in the message
// itself (the record count is replaced by kInconsistentCounts for every peer): each
// rank learns of it from the all-to-all it takes part in anyway, and every rank throws
// rather than the one that found it while the others wait in the next exchange.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe {

inline constexpr std::int64_t kInconsistentCounts = -1;

// What a rank sends: per peer p (P of them), [rows_per_rank[p], assignments_per_rank[p],
// kept_per_expert[p·E_local … (p+1)·E_local)]. `inconsistency` is empty when every
// peer's kept counts add up to its records, else says which do not (and the message
// carries kInconsistentCounts as every peer's record count).
std::vector<std::int64_t> peer_count_messages(const std::vector<std::int64_t>& rows_per_rank,
                                              const std::vector<std::int64_t>& assignments_per_rank,
                                              const std::int64_t* kept_per_expert, std::int64_t local_experts,
                                              std::string& inconsistency);

// What a rank received from every sender (the messages above, sender by sender).
struct PeerCounts {
  std::vector<std::int64_t> rows, assignments;   // [P]: from each sender
  std::vector<std::int64_t> local_rows_per_expert;  // [E_local]: summed over the senders
};

// The received counts; throws moe::CollectiveError naming the lowest sender whose
// message says its counts were inconsistent (every rank reads the same verdicts).
PeerCounts read_peer_counts(const std::vector<std::int64_t>& received, int peers, std::int64_t local_experts);

}  // namespace moe
