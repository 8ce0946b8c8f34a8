// The single-rank dispatch plan as independent per-element steps, so that it can run
// where the routing lives (docs/design.md §4b). It computes exactly what the host plan
// (src/dispatch_plan.cpp) computes: slot-major admission against the capacity, the kept
// assignments grouped by (expert, token, slot), and the combine's entries by token in
// slot order. The GPU runs one thread per step below (kernels/cuda/plan.cu); the host
// tests run the same functions in loops and compare with the host plan.
//
// Every step is a stable rank: an item's place among the earlier items with the same
// key. The items are cut into chunks of kChunk; per (key, chunk) a count, per key an
// exclusive scan of the counts over the chunks, and per item the count before it in its
// own chunk. No atomics, so the result has no ordering freedom.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/host_device.hpp"

namespace moe::kernels::plan {

constexpr std::int64_t kChunk = 256;

MOE_HD inline std::int64_t chunk_count(std::int64_t items) { return (items + kChunk - 1) / kChunk; }

// Admission serves every token's slot 0 (in token order), then every slot 1, and so
// on: the p-th item of that order is assignment t·k + j with t = p mod T, j = p div T.
MOE_HD inline std::int64_t slot_major_assignment(std::int64_t p, std::int64_t tokens, std::int64_t top_k) {
  return (p % tokens) * top_k + p / tokens;
}

// Keys of the three ranks; -1 means the item takes no part.
struct AdmissionKey {  // items in slot-major order, keyed by expert (laid out so by step 1's first kernel)
  const std::int32_t* slot_major_experts;
  MOE_HD std::int32_t operator()(std::int64_t p) const { return slot_major_experts[p]; }
};
struct KeptExpertKey {  // assignments in token order, kept ones keyed by expert
  const std::int32_t* indices;
  const std::uint8_t* kept;
  MOE_HD std::int32_t operator()(std::int64_t a) const { return kept[a] ? indices[a] : -1; }
};
struct KeptKey {  // assignments in token order, kept ones under one key
  const std::uint8_t* kept;
  MOE_HD std::int32_t operator()(std::int64_t a) const { return kept[a] ? 0 : -1; }
};

// How many items of chunk `chunk` (of `items`) have key `key`: counts[key·chunks + chunk].
template <class Key>
MOE_HD std::int32_t count_in_chunk(const Key& key_of, std::int64_t items, std::int64_t chunk, std::int32_t key) {
  const std::int64_t end = (chunk + 1) * kChunk < items ? (chunk + 1) * kChunk : items;
  std::int32_t count = 0;
  for (std::int64_t p = chunk * kChunk; p < end; ++p) count += key_of(p) == key ? 1 : 0;
  return count;
}

// A count step: for every (key, chunk) of its items, how many items of the chunk have
// the key, into counts[key·chunks + chunk]. Derived states, as static functions of its
// arrays, the items' keys (key(p): a functor of the item), how many items and keys
// there are, and where the counts go. Thread i of keys·chunks counts one (key, chunk)
// with count_in_chunk, which reads the chunk once per key (E·T·k reads: 92 µs for the
// grouping count of a fine forward on an H200). The GPU runs a block per chunk instead
// (kernels/cuda/plan.cu), which reads the chunk's keys once into shared memory and
// counts each key there: the same counts.
template <class Derived>
struct ChunkCount {
  template <class Arrays>
  MOE_HD void operator()(const Arrays& p, std::int64_t i) const {
    const std::int64_t items = Derived::items(p), chunks = chunk_count(items);
    Derived::counts(p)[i] = count_in_chunk(Derived::key(p), items, i % chunks, static_cast<std::int32_t>(i / chunks));
  }
};
template <class Step>
struct is_chunk_count : std::is_base_of<ChunkCount<Step>, Step> {};

// The exclusive scan of each key's counts over the chunks, a thread per (key, chunk)
// (scan_threads of them): bases[key·chunks + c] = Σ_{c' < c} counts[key·chunks + c'],
// and the last chunk's thread writes the key's total into totals[key] (when totals is
// not null). Each thread sums its own prefix, so no thread walks every chunk of a key
// after the others (a thread per key did: 48 µs per scan at 256 chunks on an H200). A
// key of no chunks (no items) still gets a thread, which writes its total 0.
MOE_HD inline std::int64_t scan_threads(std::int64_t keys, std::int64_t chunks) { return keys * (chunks > 0 ? chunks : 1); }
MOE_HD inline void scan_chunk_counts(const std::int32_t* counts, std::int64_t chunks, std::int64_t i, std::int32_t* bases,
                                     std::int64_t* totals) {
  if (chunks == 0) {
    if (totals) totals[i] = 0;
    return;
  }
  const std::int64_t key = i / chunks, chunk = i % chunks;
  std::int64_t sum = 0;
  for (std::int64_t c = key * chunks; c < i; ++c) sum += counts[c];
  bases[i] = static_cast<std::int32_t>(sum);
  if (chunk == chunks - 1 && totals) totals[key] = sum + counts[i];
}

// How many items before p have key `key`: p's stable rank under that key when it has it.
template <class Key>
MOE_HD std::int64_t count_before(const Key& key_of, const std::int32_t* bases, std::int64_t chunks, std::int64_t p,
                                 std::int32_t key) {
  const std::int64_t chunk = p / kChunk;
  std::int64_t count = bases[key * chunks + chunk];
  for (std::int64_t q = chunk * kChunk; q < p; ++q) count += key_of(q) == key ? 1 : 0;
  return count;
}

// The capacity rule (docs/design.md §1): an assignment is kept when fewer than
// `capacity` assignments to its expert were admitted before it.
MOE_HD inline bool admitted(std::int64_t capacity_rank, std::int64_t capacity) { return capacity_rank < capacity; }

// Padded to the most kept rows, each expert's rows are a multiple of this.
constexpr std::int64_t kPaddedRowsMultiple = 8;

// How a padded plan (rows_per_expert = R > 0) sizes each expert's rows.
enum class Padding : std::uint8_t {
  // R, whatever was kept: capacity-padded experts (static shapes), whose shapes are
  // known before the routing (R is at least every expert's kept count).
  Room,
  // The most rows any expert kept, rounded up to a multiple of 8, when that is at most
  // R and every expert kept a row; else packed. Padded only as far as this routing
  // needs, and packed when the routing is too uneven for the room R gives, or leaves an
  // expert empty: padded, an empty expert would run M rows of zeros and have its
  // weights read for nothing, where packed it runs no product (a decoding step's few
  // tokens leave most experts empty, and reading weights is then the whole cost).
  Most,
  // R itself where Most would pad (the most rows kept fit in R, every expert kept one);
  // else packed. The rows a layer speculated before the kept counts reached the host,
  // and queued its experts' products for (docs/design.md §4b, speculated rows).
  RoomIfFits,
};

// The rows every expert gets in a padded layout, or 0 for the packed one
// (docs/design.md §4b): rows_per_expert = 0 is packed; R > 0 as `padding` says. The
// plan steps and the layer both decide with this function, from the same kept counts.
MOE_HD inline std::int64_t padded_rows(const std::int64_t* kept_per_expert, std::int64_t experts,
                                       std::int64_t rows_per_expert, Padding padding) {
  if (rows_per_expert <= 0) return 0;
  if (padding == Padding::Room) return rows_per_expert;
  std::int64_t most = 0, fewest = experts > 0 ? kept_per_expert[0] : 0;
  for (std::int64_t e = 0; e < experts; ++e) {
    most = kept_per_expert[e] > most ? kept_per_expert[e] : most;
    fewest = kept_per_expert[e] < fewest ? kept_per_expert[e] : fewest;
  }
  const std::int64_t rows = (most + kPaddedRowsMultiple - 1) / kPaddedRowsMultiple * kPaddedRowsMultiple;
  if (fewest == 0 || rows > rows_per_expert) return 0;
  return padding == Padding::Most ? rows : rows_per_expert;
}

// The grouped rows begin at offsets[e] for expert e, for E experts. Packed
// (rows_per_expert = 0): offsets[0] = 0 and offsets[e+1] = offsets[e] + kept[e].
// Padded (rows_per_expert = R > 0, from padded_rows): offsets[e] = e·R, whatever was
// kept.
MOE_HD inline void expert_offsets(const std::int64_t* kept_per_expert, std::int64_t experts,
                                  std::int64_t rows_per_expert, std::int64_t* offsets) {
  offsets[0] = 0;
  for (std::int64_t e = 0; e < experts; ++e)
    offsets[e + 1] = offsets[e] + (rows_per_expert > 0 ? rows_per_expert : kept_per_expert[e]);
}

// ---- The plan, one function per thread of each step ----

// Inputs, outputs and scratch of one single-rank plan (all in the memory it runs in).
// Outputs are sized for T·k entries: only the first A = Σ kept are written.
struct PlanArrays {
  const std::int32_t* indices;  // [T·k] expert of each assignment
  const float* weights;         // [T·k]
  std::int64_t tokens, top_k, experts, capacity;
  std::int64_t rows_per_expert;  // 0: packed grouped rows; R > 0: padded, to R or as padded_rows says (below)
  // Scratch.
  std::int32_t* slot_major_experts;  // [T·k] the experts in admission order (one division each, not one per look)
  std::int32_t* counts;         // [E · chunks], each step's counts until its scan
  std::int32_t* bases;          // [E · chunks] admission
  std::int32_t* group_bases;    // [E · chunks] grouping
  std::int32_t* entry_bases;    // [chunks] combine entries
  std::uint8_t* kept;           // [T·k]
  std::int32_t* row_of;         // [T·k] grouped row of each kept assignment
  std::int64_t* offsets;        // [E + 1] grouped rows of expert e begin at offsets[e]
  std::int64_t* entries;        // [1] A
  // Results.
  std::int64_t* kept_per_expert;  // [E]
  std::int32_t* grouped_tokens;   // [A] (padded: [E·R]): the token of each grouped row, -1 for padding
  std::int32_t* combine_offsets;  // [T + 1]: each token's entries …
  std::int32_t* combine_sources;  // [A] … the grouped row of each (by token, in slot order)
  float* combine_weights;         // [A] … its weight
  std::int32_t* entry_slot;       // [A] … and its assignment t·k + j
  // With rows_per_expert = R: how the experts' rows are padded (padded_rows). With
  // Most or RoomIfFits grouped_tokens must hold max(E·R, T·k) rows.
  Padding padding = Padding::Room;

  MOE_HD std::int64_t items() const { return tokens * top_k; }
  // A capacity of at least T·k admits every assignment (a dropless layer passes T·k):
  // the plan then skips admission and the combine's entries are the assignments
  // themselves (admit_all, grouping_place).
  MOE_HD bool admits_all() const { return capacity >= items(); }
  MOE_HD std::int64_t padded_rows() const {
    return plan::padded_rows(kept_per_expert, experts, rows_per_expert, padding);
  }
  MOE_HD std::int64_t chunks() const { return chunk_count(items()); }
};

// The steps, in order; "thread i of n" is what one GPU thread does (plan.cu).

// 1. Admission: order (T·k threads), count (E·chunks), scan (E·chunks), decide (T·k).
MOE_HD inline void admission_order(const PlanArrays& p, std::int64_t item) {
  p.slot_major_experts[item] = p.indices[slot_major_assignment(item, p.tokens, p.top_k)];
}
MOE_HD inline void admission_scan(const PlanArrays& p, std::int64_t i) {
  scan_chunk_counts(p.counts, p.chunks(), i, p.bases, nullptr);  // the totals (choices before drops) are not needed
}
MOE_HD inline void admission_decide(const PlanArrays& p, std::int64_t item) {
  const AdmissionKey key{p.slot_major_experts};
  const std::int64_t rank = count_before(key, p.bases, p.chunks(), item, key(item));
  p.kept[slot_major_assignment(item, p.tokens, p.top_k)] = admitted(rank, p.capacity) ? 1 : 0;
}

// 1'. Every assignment admitted (admits_all): keep_all (T·k threads) in the distributed
// plan's admission; in the single-rank plan admit_all (max(T·k, T + 1) threads), which
// also lays out the combine's entries: in token order they are the assignments
// themselves, so token t's first entry is t·k and there are T·k of them.
MOE_HD inline void keep_all(const PlanArrays& p, std::int64_t a) { p.kept[a] = 1; }
MOE_HD inline void admit_all(const PlanArrays& p, std::int64_t i) {
  if (i < p.items()) keep_all(p, i);
  if (i <= p.tokens) p.combine_offsets[i] = static_cast<std::int32_t>(i * p.top_k);
  if (i == 0) *p.entries = p.items();
}

// 2. Grouping: count (E·chunks), scan (E·chunks: the totals are the kept counts), offsets
// (one thread), padding (E·R, padded plans only), place (T·k: each kept assignment's
// grouped row).
MOE_HD inline void grouping_scan(const PlanArrays& p, std::int64_t i) {
  scan_chunk_counts(p.counts, p.chunks(), i, p.group_bases, p.kept_per_expert);
}
MOE_HD inline void grouping_offsets(const PlanArrays& p) {
  expert_offsets(p.kept_per_expert, p.experts, p.padded_rows(), p.offsets);
}
// Padded only (E·R threads, R = rows_per_expert, the most padded_rows gives): the rows
// past an expert's kept ones are padding. (Each thread decides padded_rows again: O(E)
// when padding to the most, against a step per plan to keep it.) Where RoomIfFits
// falls back to packed rows, the E·R rows past the A kept ones are padding too: the
// experts' products queued for the speculated layout read all E·R (and the combine's
// entries, all below A, read what those wrote), so every row they read names a token of
// this forward or none.
MOE_HD inline void grouping_pad(const PlanArrays& p, std::int64_t g) {
  const std::int64_t rows = p.padded_rows();
  if (rows == 0) {
    if (p.padding != Padding::RoomIfFits) return;
    std::int64_t kept = 0;
    for (std::int64_t e = 0; e < p.experts; ++e) kept += p.kept_per_expert[e];
    if (g >= kept) p.grouped_tokens[g] = -1;
    return;
  }
  if (g >= p.experts * rows) return;
  if (g % rows >= p.kept_per_expert[g / rows]) p.grouped_tokens[g] = -1;
}
MOE_HD inline void grouping_place(const PlanArrays& p, std::int64_t a) {
  if (!p.kept[a]) return;
  const std::int32_t e = p.indices[a];
  const std::int64_t g =
      p.offsets[e] + count_before(KeptExpertKey{p.indices, p.kept}, p.group_bases, p.chunks(), a, e);
  p.grouped_tokens[g] = static_cast<std::int32_t>(a / p.top_k);
  p.row_of[a] = static_cast<std::int32_t>(g);
  if (p.admits_all()) {  // entry a is assignment a (admit_all): step 3 is done here
    p.combine_sources[a] = static_cast<std::int32_t>(g);
    p.combine_weights[a] = p.weights[a];
    p.entry_slot[a] = static_cast<std::int32_t>(a);
  }
}

// 3. The combine's entries, the kept assignments in token order: count (chunks), scan
// (chunks: the total is A), place (T·k), and each token's first entry (T + 1).
MOE_HD inline void entry_scan(const PlanArrays& p, std::int64_t i) { scan_chunk_counts(p.counts, p.chunks(), i, p.entry_bases, p.entries); }
MOE_HD inline void entry_place(const PlanArrays& p, std::int64_t a) {
  if (!p.kept[a]) return;
  const std::int64_t entry = count_before(KeptKey{p.kept}, p.entry_bases, p.chunks(), a, 0);
  p.combine_sources[entry] = p.row_of[a];
  p.combine_weights[entry] = p.weights[a];
  p.entry_slot[entry] = static_cast<std::int32_t>(a);
}
MOE_HD inline void token_entry_offset(const PlanArrays& p, std::int64_t t) {
  p.combine_offsets[t] = static_cast<std::int32_t>(
      t < p.tokens ? count_before(KeptKey{p.kept}, p.entry_bases, p.chunks(), t * p.top_k, 0) : *p.entries);
}

// The steps in their order, each as a functor run(count, step) is given: step(p, i)
// for every i < count, in any order or at once, and each step after the one before
// has finished. The GPU launches a kernel per step, or runs them all in one kernel
// with a grid-wide barrier between steps (plan.cu); the host tests loop.
struct KeepAll { MOE_HD void operator()(const PlanArrays& p, std::int64_t a) const { keep_all(p, a); } };
struct AdmitAll { MOE_HD void operator()(const PlanArrays& p, std::int64_t i) const { admit_all(p, i); } };
struct AdmissionOrder { MOE_HD void operator()(const PlanArrays& p, std::int64_t i) const { admission_order(p, i); } };
struct AdmissionCount : ChunkCount<AdmissionCount> {  // items in slot-major order, by expert
  MOE_HD static AdmissionKey key(const PlanArrays& p) { return {p.slot_major_experts}; }
  MOE_HD static std::int64_t items(const PlanArrays& p) { return p.items(); }
  MOE_HD static std::int64_t keys(const PlanArrays& p) { return p.experts; }
  MOE_HD static std::int32_t* counts(const PlanArrays& p) { return p.counts; }
};
struct AdmissionScan { MOE_HD void operator()(const PlanArrays& p, std::int64_t e) const { admission_scan(p, e); } };
struct AdmissionDecide { MOE_HD void operator()(const PlanArrays& p, std::int64_t i) const { admission_decide(p, i); } };
struct GroupingCount : ChunkCount<GroupingCount> {  // kept assignments in token order, by expert
  MOE_HD static KeptExpertKey key(const PlanArrays& p) { return {p.indices, p.kept}; }
  MOE_HD static std::int64_t items(const PlanArrays& p) { return p.items(); }
  MOE_HD static std::int64_t keys(const PlanArrays& p) { return p.experts; }
  MOE_HD static std::int32_t* counts(const PlanArrays& p) { return p.counts; }
};
struct GroupingScan { MOE_HD void operator()(const PlanArrays& p, std::int64_t e) const { grouping_scan(p, e); } };
struct GroupingOffsets { MOE_HD void operator()(const PlanArrays& p, std::int64_t) const { grouping_offsets(p); } };
struct GroupingPad { MOE_HD void operator()(const PlanArrays& p, std::int64_t g) const { grouping_pad(p, g); } };
struct GroupingPlace { MOE_HD void operator()(const PlanArrays& p, std::int64_t a) const { grouping_place(p, a); } };
struct EntryCount : ChunkCount<EntryCount> {  // kept assignments in token order, one key
  MOE_HD static KeptKey key(const PlanArrays& p) { return {p.kept}; }
  MOE_HD static std::int64_t items(const PlanArrays& p) { return p.items(); }
  MOE_HD static std::int64_t keys(const PlanArrays&) { return 1; }
  MOE_HD static std::int32_t* counts(const PlanArrays& p) { return p.counts; }
};
struct EntryScan { MOE_HD void operator()(const PlanArrays& p, std::int64_t i) const { entry_scan(p, i); } };
struct EntryPlace { MOE_HD void operator()(const PlanArrays& p, std::int64_t a) const { entry_place(p, a); } };
struct TokenEntryOffset { MOE_HD void operator()(const PlanArrays& p, std::int64_t t) const { token_entry_offset(p, t); } };

MOE_HD_CALLS_ARGUMENT
template <class Run>
MOE_HD void for_each_plan_step(const PlanArrays& p, Run&& run) {
  const std::int64_t n = p.items(), chunks = p.chunks(), keyed = p.experts * chunks;
  // Dropless (admits_all): 5 steps for a packed plan where the capacity's take 12.
  if (p.admits_all()) {
    run(n > p.tokens + 1 ? n : p.tokens + 1, AdmitAll{});
  } else {
    run(n, AdmissionOrder{});
    run(keyed, AdmissionCount{});
    run(scan_threads(p.experts, chunks), AdmissionScan{});
    run(n, AdmissionDecide{});
  }
  run(keyed, GroupingCount{});
  run(scan_threads(p.experts, chunks), GroupingScan{});
  run(std::int64_t{1}, GroupingOffsets{});
  run(p.experts * p.rows_per_expert, GroupingPad{});  // none when packed
  run(n, GroupingPlace{});
  if (p.admits_all()) return;  // the entries are placed
  run(chunks, EntryCount{});
  run(scan_threads(1, chunks), EntryScan{});
  run(n, EntryPlace{});
  run(p.tokens + 1, TokenEntryOffset{});
}

// The GPU's plan run on the host, a thread at a time (the tests compare it with
// src/dispatch_plan.cpp; it costs O(T·k·(E + kChunk)), so the CPU layer keeps the
// host plan).
inline void run_plan_steps_serially(const PlanArrays& p) {
  for_each_plan_step(p, [&](std::int64_t count, auto step) {
    for (std::int64_t i = 0; i < count; ++i) step(p, i);
  });
}

}  // namespace moe::kernels::plan
