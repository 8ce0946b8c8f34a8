// The dispatch plan (docs/design.md §1 capacity, §2 steps 2–4): which of a rank's top-k
// assignments are kept, and how the kept ones are laid out for the experts. Host
// code, shared by every backend and by the single-process and distributed paths; a
// single-rank layer on a GPU computes the same arrays where the routing lives, as the
// stable ranks of kernels/plan_steps.hpp (tests/unit/test_plan_steps.cpp holds the two
// equal).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/exchange_plan_steps.hpp"
#include "moe/config.hpp"

namespace moe {

// C = ceil(cf · T · k / E) in float64 from the float32 cf; no limit when
// drop_tokens is false.
std::int64_t expert_capacity(const MOEConfig& config, std::int64_t tokens);

// Capacity applied to one rank's routing. Assignments are admitted slot 0 of every
// token first (in token order), then slot 1, and so on; one past C is dropped.
struct DispatchPlan {
  // (Assignment a = t·k + j is token t's slot j.)
  std::int64_t tokens = 0;
  std::int64_t top_k = 0;
  std::int64_t num_experts = 0;
  std::int64_t capacity = 0;
  std::vector<std::uint8_t> kept;             // [T·k]: 1 kept, 0 dropped
  std::vector<std::int64_t> kept_per_expert;  // [E]
  std::int64_t dropped = 0;

  bool is_kept(std::int64_t token, std::int64_t slot) const {
    return kept[static_cast<std::size_t>(token * top_k + slot)] != 0;
  }
};

// indices: [T·k] expert ids, each in [0, E) (the caller has checked).
DispatchPlan make_dispatch_plan(const std::int32_t* indices, std::int64_t tokens,
                                const MOEConfig& config);

// Work for a set of experts, as a CSR over output rows: output row r receives
// Σ weight[a] · FFN_{expert[a]}(input row input_row[a]) for a in
// [offsets[r], offsets[r+1]). In the single-process path input and output rows are
// the tokens; on an expert owner they are the rows it received.
struct ExpertAssignments {
  std::int64_t num_experts = 0;       // experts these ids index (local to the owner)
  std::int64_t output_rows = 0;
  std::vector<std::int32_t> offsets;  // [output_rows + 1]
  std::vector<std::int32_t> input_row;
  std::vector<std::int32_t> expert;
  std::vector<float> weight;
  std::vector<std::int32_t> slot;  // t·k + j of each assignment, where the source knows it

  std::int64_t size() const { return static_cast<std::int64_t>(expert.size()); }
};

// The kept assignments of a plan, by token, in slot order. The overload with `out`
// refills it, keeping its vectors' memory (a layer's forward does, every call).
ExpertAssignments token_assignments(const DispatchPlan& plan, const std::int32_t* indices,
                                    const float* weights);
void token_assignments(const DispatchPlan& plan, const std::int32_t* indices, const float* weights,
                       ExpertAssignments& out);

// The regroup (docs/design.md §2 step 4): assignments ordered by expert so each expert's
// input rows are one contiguous block (stable: row order within an expert).
struct ExpertGrouping {
  std::vector<std::int64_t> expert_offsets;     // [num_experts + 1] into grouped rows
  std::vector<std::int32_t> grouped_input_row;  // [A]: input row of each grouped row
  std::vector<std::int32_t> grouped_row_of;     // [A]: grouped row of assignment a
};

ExpertGrouping group_by_expert(const ExpertAssignments& assignments);
void group_by_expert(const ExpertAssignments& assignments, ExpertGrouping& grouping);  // refills, as above

// How token rows travel to the experts' owners (docs/design.md §2 step 3).
enum class Traffic {
  Deduplicated,   // one row per (token, owner rank): a token crosses to a rank once
  PerAssignment,  // one row per kept assignment
};

// One assignment as it travels with its row (its expert on the owner, its weight, and
// whether it starts a row): shared with the plan's steps, which write and read records
// where the routing lives.
using AssignmentRecord = kernels::plan::AssignmentRecord;

// The send side of a distributed forward. Rows are ordered by destination rank — the
// other ranks in rank order, then this rank itself, whose rows never travel (they are
// the middle part of an ExchangeSpan) — then by token, then slot; each row carries its
// assignments (in slot order).
struct SendLayout {
  int own_rank = 0;
  std::vector<std::int64_t> rows_per_rank;         // [P]
  std::vector<std::int64_t> assignments_per_rank;  // [P]
  std::vector<std::int32_t> row_token;             // [R]: the token each row carries
  std::vector<AssignmentRecord> assignments;       // [A], row by row
  std::vector<std::int32_t> assignment_slot;       // [A]: t·k + j, to map results back
  std::vector<std::int32_t> token_offsets;         // [T+1]: CSR of each token's rows …
  std::vector<std::int32_t> token_rows;            // … [R], to sum what comes back

  std::int64_t rows() const { return static_cast<std::int64_t>(row_token.size()); }
  std::int64_t own_rows() const { return rows_per_rank[static_cast<std::size_t>(own_rank)]; }
  std::int64_t own_assignments() const { return assignments_per_rank[static_cast<std::size_t>(own_rank)]; }
};

// Experts are owned in contiguous blocks: rank r owns [r·E/P, (r+1)·E/P).
SendLayout make_send_layout(const DispatchPlan& plan, const std::int32_t* indices,
                            const float* weights, int num_ranks, int own_rank, Traffic traffic);

// The owner's view of what it received: `rows` rows and their `count` records, row by row.
ExpertAssignments received_assignments(const AssignmentRecord* records, std::int64_t count, std::int64_t rows,
                                       std::int64_t num_local_experts);

}  // namespace moe
