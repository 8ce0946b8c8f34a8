// The distributed dispatch plan (P > 1) as independent per-element steps, so that it
// runs where the routing lives (docs/design.md §4b) and only per-peer counts cross to
// the host. Two halves:
//   - the sender's: the capacity rule, then the send layout of src/dispatch_plan.cpp's
//     make_send_layout (rows by destination — the other ranks in rank order, this rank
//     last — then token; each row's assignment records; each token's rows for the sum
//     of what comes back);
//   - the owner's: over the records it received, each record's row and its grouped
//     row by local expert, as received_assignments and group_by_expert give them.
// Both are stable ranks, as kernels/plan_steps.hpp computes them (chunks of kChunk,
// no atomics), so the results equal the host functions' bit for bit
// (tests/unit/test_exchange_plan_steps.cpp). The GPU runs one thread per step element
// (kernels/cuda/plan.cu); the host runs the same functions in loops.
#pragma once

#include <cstdint>

#include "kernels/host_device.hpp"
#include "kernels/plan_steps.hpp"

namespace moe::kernels::plan {

// One assignment as it travels with its row: the expert's id on its owner, the weight,
// and whether it is the first of its row's assignments (records go row by row, so the
// flags delimit the rows and no per-row count has to travel).
struct AssignmentRecord {
  std::uint32_t local_expert : 31;
  std::uint32_t starts_row : 1;
  float weight;
};
static_assert(sizeof(AssignmentRecord) == 8, "an assignment travels as 8 bytes");

// Keys materialised per item (-1: the item takes no part).
struct KeyArray {
  const std::int32_t* keys;
  MOE_HD std::int32_t operator()(std::int64_t i) const { return keys[i]; }
};
struct TakesPartKey {  // every item with a key, under one key
  const std::int32_t* keys;
  MOE_HD std::int32_t operator()(std::int64_t i) const { return keys[i] >= 0 ? 0 : -1; }
};

// Where the rows for rank `owner` stand in the send order: the other ranks in rank
// order, this rank's own last (its rows never travel; docs/design.md §2).
MOE_HD inline std::int64_t send_position(std::int64_t owner, std::int64_t own_rank, std::int64_t ranks) {
  return owner < own_rank ? owner : owner > own_rank ? owner - 1 : ranks - 1;
}

// ---- The sender's half ----

struct SendPlanArrays {
  // Admission and the kept count per expert, as the single-rank plan computes them:
  // its indices, weights, sizes, scratch and kept_per_expert (a [E] result here); its
  // grouped-row and combine results are not used.
  PlanArrays admission;
  std::int64_t ranks, own_rank;
  bool deduplicate;  // Traffic::Deduplicated: one row per (token, owner rank)
  // Scratch.
  std::int32_t* row_keys;     // [T·k] the owner of each kept assignment that starts a row, else -1
  std::int32_t* record_keys;  // [T·k] the owner of each kept assignment, else -1
  std::int32_t* row_bases;     // [P · chunks]
  std::int32_t* record_bases;  // [P · chunks]
  std::int32_t* start_bases;   // [chunks]
  std::int64_t* rows_begin;     // [P] where rank p's rows begin in the send order
  std::int64_t* records_begin;  // [P] and its records
  std::int64_t* total_rows;     // [1] R
  // Results (R rows and A records, both at most T·k).
  std::int64_t* rows_per_rank;         // [P]
  std::int64_t* assignments_per_rank;  // [P]
  std::int32_t* row_token;             // [R] the token of each row, in the send order
  AssignmentRecord* records;           // [A] row by row
  std::int32_t* assignment_slot;       // [A] t·k + j of each record
  std::int32_t* token_offsets;         // [T + 1] each token's rows …
  std::int32_t* token_rows;            // [R] … in the send order

  MOE_HD std::int64_t items() const { return admission.items(); }
  MOE_HD std::int64_t chunks() const { return admission.chunks(); }
  MOE_HD std::int64_t experts_per_rank() const { return admission.experts / ranks; }
};

// The keys (T·k threads): a kept assignment goes to its expert's owner; it starts a row
// unless deduplicated traffic already sends its token to that owner for an earlier slot.
MOE_HD inline void send_keys(const SendPlanArrays& s, std::int64_t a) {
  const PlanArrays& p = s.admission;
  if (!p.kept[a]) {
    s.row_keys[a] = s.record_keys[a] = -1;
    return;
  }
  const std::int32_t owner = static_cast<std::int32_t>(p.indices[a] / s.experts_per_rank());
  bool joins_row = false;
  if (s.deduplicate)
    for (std::int64_t b = a - a % p.top_k; b < a; ++b)
      joins_row = joins_row || (p.kept[b] && p.indices[b] / s.experts_per_rank() == owner);
  s.record_keys[a] = owner;
  s.row_keys[a] = joins_row ? -1 : owner;
}
// The scans of the counts per (owner, chunk) (SendRowCount, SendRecordCount below;
// P·chunks threads): the totals are what each peer receives.
MOE_HD inline void send_row_scan(const SendPlanArrays& s, std::int64_t i) {
  scan_chunk_counts(s.admission.counts, s.chunks(), i, s.row_bases, s.rows_per_rank);
}
MOE_HD inline void send_record_scan(const SendPlanArrays& s, std::int64_t i) {
  scan_chunk_counts(s.admission.counts, s.chunks(), i, s.record_bases, s.assignments_per_rank);
}
// Rows in token order under one key (SendStartCount), for each token's first row.
MOE_HD inline void send_start_scan(const SendPlanArrays& s, std::int64_t i) {
  scan_chunk_counts(s.admission.counts, s.chunks(), i, s.start_bases, s.total_rows);
}
// Where each destination's rows and records begin (one thread).
MOE_HD inline void send_blocks(const SendPlanArrays& s) {
  std::int64_t rows = 0, records = 0;
  for (std::int64_t position = 0; position < s.ranks; ++position) {
    const std::int64_t owner = position < s.own_rank ? position : position < s.ranks - 1 ? position + 1 : s.own_rank;
    s.rows_begin[owner] = rows, s.records_begin[owner] = records;
    rows += s.rows_per_rank[owner], records += s.assignments_per_rank[owner];
  }
}
// Each token's first row among the token rows (T + 1 threads).
MOE_HD inline void send_token_offset(const SendPlanArrays& s, std::int64_t t) {
  const std::int64_t tokens = s.admission.tokens;
  s.token_offsets[t] = static_cast<std::int32_t>(
      t < tokens ? count_before(TakesPartKey{s.row_keys}, s.start_bases, s.chunks(), t * s.admission.top_k, 0)
                 : *s.total_rows);
}
// Each kept assignment's record, and its row where it starts one (T·k threads). A
// token's rows are listed in the send order: by their owners' send positions, and by
// slot for one owner (per-assignment traffic sends a token to an owner once per slot).
MOE_HD inline void send_place(const SendPlanArrays& s, std::int64_t a) {
  const PlanArrays& p = s.admission;
  const std::int32_t owner = s.record_keys[a];
  if (owner < 0) return;
  const std::int64_t record =
      s.records_begin[owner] + count_before(KeyArray{s.record_keys}, s.record_bases, s.chunks(), a, owner);
  AssignmentRecord r{};
  r.local_expert = static_cast<std::uint32_t>(p.indices[a] - owner * s.experts_per_rank());
  r.starts_row = s.row_keys[a] >= 0 ? 1u : 0u;
  r.weight = p.weights[a];
  s.records[record] = r;
  s.assignment_slot[record] = static_cast<std::int32_t>(a);
  if (s.row_keys[a] < 0) return;
  const std::int64_t row = s.rows_begin[owner] + count_before(KeyArray{s.row_keys}, s.row_bases, s.chunks(), a, owner);
  const std::int64_t t = a / p.top_k, mine = send_position(owner, s.own_rank, s.ranks);
  std::int64_t before = 0;  // the token's rows that go before this one: to earlier owners, or earlier slots' to the same
  for (std::int64_t b = t * p.top_k; b < (t + 1) * p.top_k; ++b) {
    if (s.row_keys[b] < 0) continue;
    const std::int64_t theirs = send_position(s.row_keys[b], s.own_rank, s.ranks);
    before += theirs < mine || (theirs == mine && b < a) ? 1 : 0;
  }
  s.row_token[row] = static_cast<std::int32_t>(t);
  s.token_rows[s.token_offsets[t] + before] = static_cast<std::int32_t>(row);
}

struct SendKeys { MOE_HD void operator()(const SendPlanArrays& s, std::int64_t a) const { send_keys(s, a); } };
struct SendRowCount : ChunkCount<SendRowCount> {  // row starts, by owner
  MOE_HD static KeyArray key(const SendPlanArrays& s) { return {s.row_keys}; }
  MOE_HD static std::int64_t items(const SendPlanArrays& s) { return s.items(); }
  MOE_HD static std::int64_t keys(const SendPlanArrays& s) { return s.ranks; }
  MOE_HD static std::int32_t* counts(const SendPlanArrays& s) { return s.admission.counts; }
};
struct SendRowScan { MOE_HD void operator()(const SendPlanArrays& s, std::int64_t i) const { send_row_scan(s, i); } };
struct SendRecordCount : ChunkCount<SendRecordCount> {  // kept assignments, by owner
  MOE_HD static KeyArray key(const SendPlanArrays& s) { return {s.record_keys}; }
  MOE_HD static std::int64_t items(const SendPlanArrays& s) { return s.items(); }
  MOE_HD static std::int64_t keys(const SendPlanArrays& s) { return s.ranks; }
  MOE_HD static std::int32_t* counts(const SendPlanArrays& s) { return s.admission.counts; }
};
struct SendRecordScan { MOE_HD void operator()(const SendPlanArrays& s, std::int64_t i) const { send_record_scan(s, i); } };
struct SendStartCount : ChunkCount<SendStartCount> {  // row starts, one key
  MOE_HD static TakesPartKey key(const SendPlanArrays& s) { return {s.row_keys}; }
  MOE_HD static std::int64_t items(const SendPlanArrays& s) { return s.items(); }
  MOE_HD static std::int64_t keys(const SendPlanArrays&) { return 1; }
  MOE_HD static std::int32_t* counts(const SendPlanArrays& s) { return s.admission.counts; }
};
struct SendStartScan { MOE_HD void operator()(const SendPlanArrays& s, std::int64_t i) const { send_start_scan(s, i); } };
struct SendBlocks { MOE_HD void operator()(const SendPlanArrays& s, std::int64_t) const { send_blocks(s); } };
struct SendTokenOffset { MOE_HD void operator()(const SendPlanArrays& s, std::int64_t t) const { send_token_offset(s, t); } };
struct SendPlace { MOE_HD void operator()(const SendPlanArrays& s, std::int64_t a) const { send_place(s, a); } };

// A single-rank step run on the send plan's admission arrays; a count step stays one.
template <class Step>
struct OnAdmission {
  MOE_HD void operator()(const SendPlanArrays& s, std::int64_t i) const { Step{}(s.admission, i); }
};
template <class Count>
struct OnAdmissionCount : ChunkCount<OnAdmissionCount<Count>> {
  MOE_HD static auto key(const SendPlanArrays& s) { return Count::key(s.admission); }
  MOE_HD static std::int64_t items(const SendPlanArrays& s) { return Count::items(s.admission); }
  MOE_HD static std::int64_t keys(const SendPlanArrays& s) { return Count::keys(s.admission); }
  MOE_HD static std::int32_t* counts(const SendPlanArrays& s) { return Count::counts(s.admission); }
};

// The sender's steps in order, as for_each_plan_step runs the single-rank ones.
MOE_HD_CALLS_ARGUMENT
template <class Run>
MOE_HD void for_each_send_plan_step(const SendPlanArrays& s, Run&& run) {
  const PlanArrays& p = s.admission;
  const std::int64_t n = p.items(), chunks = p.chunks();
  if (p.admits_all()) {  // a capacity of T·k or more (dropless): every assignment kept
    run(n, OnAdmission<KeepAll>{});
  } else {
    run(n, OnAdmission<AdmissionOrder>{});
    run(p.experts * chunks, OnAdmissionCount<AdmissionCount>{});
    run(scan_threads(p.experts, chunks), OnAdmission<AdmissionScan>{});
    run(n, OnAdmission<AdmissionDecide>{});
  }
  run(p.experts * chunks, OnAdmissionCount<GroupingCount>{});  // its scan's totals: kept per expert
  run(scan_threads(p.experts, chunks), OnAdmission<GroupingScan>{});
  run(n, SendKeys{});
  run(s.ranks * chunks, SendRowCount{});
  run(scan_threads(s.ranks, chunks), SendRowScan{});
  run(s.ranks * chunks, SendRecordCount{});
  run(scan_threads(s.ranks, chunks), SendRecordScan{});
  run(chunks, SendStartCount{});
  run(scan_threads(1, chunks), SendStartScan{});
  run(std::int64_t{1}, SendBlocks{});
  run(p.tokens + 1, SendTokenOffset{});
  run(n, SendPlace{});
}

// ---- The owner's half ----

struct ReceivePlanArrays {
  const AssignmentRecord* records;  // [A] as received: this rank's own, then each other rank's in rank order
  std::int64_t assignments, rows, local_experts;
  // Scratch.
  std::int32_t* counts;        // [local_experts · chunks]
  std::int32_t* start_bases;   // [chunks]
  std::int32_t* group_bases;   // [local_experts · chunks]
  std::int64_t* kept_per_expert;  // [local_experts]
  std::int64_t* offsets;          // [local_experts + 1]
  std::int64_t* starts;           // [1] the rows the records start (= rows)
  // Results: the plan over the received rows, as load_plan puts it in an ExpertWorkspace.
  std::int32_t* grouped_rows;     // [A] the received row of each grouped row, by (expert, row)
  std::int32_t* combine_offsets;  // [rows + 1] each row's records …
  std::int32_t* combine_sources;  // [A] … the grouped row of each
  float* combine_weights;         // [A] … its weight

  MOE_HD std::int64_t chunks() const { return chunk_count(assignments); }
};

struct RecordStartKey {
  const AssignmentRecord* records;
  MOE_HD std::int32_t operator()(std::int64_t a) const { return records[a].starts_row ? 0 : -1; }
};
struct RecordExpertKey {
  const AssignmentRecord* records;
  MOE_HD std::int32_t operator()(std::int64_t a) const { return static_cast<std::int32_t>(records[a].local_expert); }
};

MOE_HD inline void receive_start_scan(const ReceivePlanArrays& r, std::int64_t i) {
  scan_chunk_counts(r.counts, r.chunks(), i, r.start_bases, r.starts);
}
MOE_HD inline void receive_expert_scan(const ReceivePlanArrays& r, std::int64_t i) {
  scan_chunk_counts(r.counts, r.chunks(), i, r.group_bases, r.kept_per_expert);
}
MOE_HD inline void receive_offsets(const ReceivePlanArrays& r) {
  expert_offsets(r.kept_per_expert, r.local_experts, 0, r.offsets);
  r.combine_offsets[r.rows] = static_cast<std::int32_t>(r.assignments);
}
// Each record's row (the rows it and the records before it start, less one) and its
// grouped row (A threads).
MOE_HD inline void receive_place(const ReceivePlanArrays& r, std::int64_t a) {
  const AssignmentRecord record = r.records[a];
  const std::int64_t row = count_before(RecordStartKey{r.records}, r.start_bases, r.chunks(), a, 0) +
                           (record.starts_row ? 0 : -1);
  const auto e = static_cast<std::int32_t>(record.local_expert);
  const std::int64_t g = r.offsets[e] + count_before(RecordExpertKey{r.records}, r.group_bases, r.chunks(), a, e);
  r.grouped_rows[g] = static_cast<std::int32_t>(row);
  r.combine_sources[a] = static_cast<std::int32_t>(g);
  r.combine_weights[a] = record.weight;
  if (record.starts_row) r.combine_offsets[row] = static_cast<std::int32_t>(a);
}

struct ReceiveStartCount : ChunkCount<ReceiveStartCount> {  // records that start a row, one key
  MOE_HD static RecordStartKey key(const ReceivePlanArrays& r) { return {r.records}; }
  MOE_HD static std::int64_t items(const ReceivePlanArrays& r) { return r.assignments; }
  MOE_HD static std::int64_t keys(const ReceivePlanArrays&) { return 1; }
  MOE_HD static std::int32_t* counts(const ReceivePlanArrays& r) { return r.counts; }
};
struct ReceiveStartScan { MOE_HD void operator()(const ReceivePlanArrays& r, std::int64_t i) const { receive_start_scan(r, i); } };
struct ReceiveExpertCount : ChunkCount<ReceiveExpertCount> {  // records, by local expert
  MOE_HD static RecordExpertKey key(const ReceivePlanArrays& r) { return {r.records}; }
  MOE_HD static std::int64_t items(const ReceivePlanArrays& r) { return r.assignments; }
  MOE_HD static std::int64_t keys(const ReceivePlanArrays& r) { return r.local_experts; }
  MOE_HD static std::int32_t* counts(const ReceivePlanArrays& r) { return r.counts; }
};
struct ReceiveExpertScan { MOE_HD void operator()(const ReceivePlanArrays& r, std::int64_t i) const { receive_expert_scan(r, i); } };
struct ReceiveOffsets { MOE_HD void operator()(const ReceivePlanArrays& r, std::int64_t) const { receive_offsets(r); } };
struct ReceivePlace { MOE_HD void operator()(const ReceivePlanArrays& r, std::int64_t a) const { receive_place(r, a); } };

MOE_HD_CALLS_ARGUMENT
template <class Run>
MOE_HD void for_each_receive_plan_step(const ReceivePlanArrays& r, Run&& run) {
  const std::int64_t chunks = r.chunks();
  run(chunks, ReceiveStartCount{});
  run(scan_threads(1, chunks), ReceiveStartScan{});
  run(r.local_experts * chunks, ReceiveExpertCount{});
  run(scan_threads(r.local_experts, chunks), ReceiveExpertScan{});
  run(std::int64_t{1}, ReceiveOffsets{});
  run(r.assignments, ReceivePlace{});
}

// Both halves on the host, a thread at a time (the tests; Ops' default).
inline void run_send_plan_steps_serially(const SendPlanArrays& s) {
  for_each_send_plan_step(s, [&](std::int64_t count, auto step) {
    for (std::int64_t i = 0; i < count; ++i) step(s, i);
  });
}
inline void run_receive_plan_steps_serially(const ReceivePlanArrays& r) {
  for_each_receive_plan_step(r, [&](std::int64_t count, auto step) {
    for (std::int64_t i = 0; i < count; ++i) step(r, i);
  });
}

}  // namespace moe::kernels::plan
