// The counts message of the exchange's step 2 (src/peer_counts.hpp): what a sender
// packs for each peer, what a receiver reads from all of them, and that an inconsistent
// plan on one rank is a CollectiveError on every rank, not a throw on that rank alone
// while its peers wait in the next exchange.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "moe/error.hpp"
#include "peer_counts.hpp"

namespace moe {
namespace {

// One sender's counts: rows and records per peer, and its kept assignments per expert
// ([P · E_local], the experts owned in blocks of E_local).
struct SenderCounts {
  std::vector<std::int64_t> rows, assignments, kept;
};

// Every rank's messages through an all-to-all done by hand: rank r receives from each
// sender s the block s packed for r.
std::vector<std::vector<std::int64_t>> all_to_all(const std::vector<std::vector<std::int64_t>>& sent, int peers,
                                                  std::size_t per_peer) {
  std::vector<std::vector<std::int64_t>> received(static_cast<std::size_t>(peers),
                                                  std::vector<std::int64_t>(per_peer * peers));
  for (int s = 0; s < peers; ++s)
    for (int r = 0; r < peers; ++r)
      for (std::size_t i = 0; i < per_peer; ++i)
        received[r][per_peer * s + i] = sent[s][per_peer * r + i];
  return received;
}

TEST(PeerCounts, EveryOwnerReadsWhatEachSenderSendsIt) {
  const int P = 3;
  const std::int64_t E_local = 2;
  // Sender s sends peer p (10·s + p) rows and its kept assignments (s + 1, p + 2) for
  // p's two experts: records = s + p + 3.
  std::vector<std::vector<std::int64_t>> sent;
  for (int s = 0; s < P; ++s) {
    SenderCounts c;
    for (int p = 0; p < P; ++p) {
      c.rows.push_back(10 * s + p);
      c.kept.push_back(s + 1);
      c.kept.push_back(p + 2);
      c.assignments.push_back(s + p + 3);
    }
    std::string inconsistency = "stale";
    sent.push_back(peer_count_messages(c.rows, c.assignments, c.kept.data(), E_local, inconsistency));
    EXPECT_EQ(inconsistency, "");
  }
  const auto received = all_to_all(sent, P, 2 + E_local);
  for (int r = 0; r < P; ++r) {
    const PeerCounts counts = read_peer_counts(received[r], P, E_local);
    ASSERT_EQ(counts.rows.size(), static_cast<std::size_t>(P));
    std::int64_t first_expert = 0, second_expert = 0;
    for (int s = 0; s < P; ++s) {
      EXPECT_EQ(counts.rows[s], 10 * s + r) << "owner " << r << ", sender " << s;
      EXPECT_EQ(counts.assignments[s], s + r + 3) << "owner " << r << ", sender " << s;
      first_expert += s + 1, second_expert += r + 2;
    }
    EXPECT_EQ(counts.local_rows_per_expert, (std::vector<std::int64_t>{first_expert, second_expert})) << "owner " << r;
  }
}

TEST(PeerCounts, OneInconsistentSenderStopsEveryRankNamingIt) {
  const int P = 4;
  const std::int64_t E_local = 1;
  std::vector<std::vector<std::int64_t>> sent;
  std::vector<std::string> verdicts;
  for (int s = 0; s < P; ++s) {
    std::vector<std::int64_t> rows(P, 5), assignments(P, 7), kept(P, 7);
    if (s == 2) kept[1] = 6;  // rank 2's plan counts one kept assignment short for rank 1
    std::string inconsistency;
    sent.push_back(peer_count_messages(rows, assignments, kept.data(), E_local, inconsistency));
    verdicts.push_back(inconsistency);
  }
  for (int s = 0; s < P; ++s) EXPECT_EQ(verdicts[s].empty(), s != 2) << "sender " << s << ": " << verdicts[s];
  EXPECT_NE(verdicts[2].find("rank 1 7 assignment records but counts 6"), std::string::npos) << verdicts[2];
  // Its message marks every peer's block, so every rank (itself included) reads it.
  const auto received = all_to_all(sent, P, 2 + E_local);
  for (int r = 0; r < P; ++r) {
    try {
      read_peer_counts(received[r], P, E_local);
      ADD_FAILURE() << "rank " << r << " read inconsistent counts without an error";
    } catch (const CollectiveError& e) {
      EXPECT_NE(std::string(e.what()).find("rank 2's dispatch plan was inconsistent"), std::string::npos)
          << "rank " << r << ": " << e.what();
    }
  }
}

TEST(PeerCounts, NoPeersNoExpertsIsAnEmptyMessage) {
  std::string inconsistency;
  const std::vector<std::int64_t> none;
  EXPECT_TRUE(peer_count_messages(none, none, nullptr, 0, inconsistency).empty());
  EXPECT_EQ(inconsistency, "");
  // One peer (itself) owning no experts: its records must be 0 then.
  const std::vector<std::int64_t> one_row{3}, no_records{0}, two_records{2};
  EXPECT_EQ(peer_count_messages(one_row, no_records, nullptr, 0, inconsistency),
            (std::vector<std::int64_t>{3, 0}));
  EXPECT_EQ(inconsistency, "");
  peer_count_messages(one_row, two_records, nullptr, 0, inconsistency);
  EXPECT_NE(inconsistency, "");
}

}  // namespace
}  // namespace moe
