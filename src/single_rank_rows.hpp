// How one rank lays out its experts' grouped rows (docs/design.md §4b), for the plan
// made where the routing lives (Ops::plan_single_rank):
// - packed: each expert its kept rows (the CPU's default, and every layer on P > 1);
// - padded to the capacity (LayerOptions::static_shapes): R = min(C, T) rows each, known
//   before the routing;
// - padded to the most rows kept (bf16 on a GPU by default; MOE_EXPERT_ROWS): every
//   expert gets the most rows any kept, where that fits in the room (1.25 times the mean);
// - speculated (MOE_SPECULATIVE_ROWS=1, a trial, with the padding to the most): the rows
//   guessed from the last forward, so that the experts can be queued before the kept
//   counts reach the host.
// The layer asks it for each forward's plan layout, the rows' bound its buffers are
// sized for, and the experts' rows of a plan; it remembers what the guess comes from
// and how the guesses fared.
#pragma once

#include <cstdint>
#include <vector>

#include "expert_compute.hpp"
#include "kernels/plan_steps.hpp"
#include "moe/config.hpp"

namespace moe {

// The single-rank plan's layout for one forward: R rows per expert (0: packed) and how
// the plan pads to them (kernels::plan::padded_rows).
struct PlanLayout {
  std::int64_t rows_per_expert = 0;
  kernels::plan::Padding padding = kernels::plan::Padding::Room;
};

class SingleRankRows {
 public:
  // pad_to_most and speculate as read by the two choices below.
  SingleRankRows(const MOEConfig& config, bool static_shapes, bool pad_to_most, bool speculate);

  // MOE_EXPERT_ROWS=padded|packed, or unset for padded_by_default; `plan` is
  // MOE_SINGLE_RANK_PLAN (null: unset). Padding is an error naming the variable on more
  // than one rank, with static shapes (they pad to the capacity already) or with the
  // host plan (the padded layout is made by the plan steps).
  static bool pad_to_most_choice(int ranks, bool static_shapes, const char* plan, bool padded_by_default);
  // MOE_SPECULATIVE_ROWS=1|0, or unset for 0; anything else is an error naming it.
  static bool speculate_choice();

  bool pads_to_most() const { return pad_to_most_; }
  // R for a forward of `tokens`; 0: packed. Static shapes: min(C, T), enough for the
  // kept rows (the router picks k distinct experts a token, so an expert keeps at most
  // T). Padded to the most: the room, 1.25 times the mean kept rows, at most min(C, T),
  // rounded up to kernels::plan::kPaddedRowsMultiple.
  std::int64_t padded_rows_per_expert(std::int64_t tokens) const;
  // The most grouped rows a forward of `tokens` can give, whatever its routing
  // (ExpertRows::rows_bound), where the routing chooses the layout (padded to the most):
  // E·R for the room R, or T·k where the routing is too uneven for it and the rows stay
  // packed. 0 elsewhere, where the token count alone fixes the rows (packed: T·k;
  // static shapes: E·R).
  std::int64_t rows_bound(std::int64_t tokens) const;
  // The plan's layout for a forward of `tokens`, or for `speculated` rows when not 0:
  // the guess, kept where the most rows kept fit in it (Padding::RoomIfFits).
  PlanLayout plan_layout(std::int64_t tokens, std::int64_t speculated = 0) const;
  // The rows per expert to queue the experts for before the kept counts reach the host,
  // or 0 for none: the last forward's most rows kept, scaled to this token count, plus
  // 1/16 for the routing's drift, rounded up to the multiple, at most the room (past it
  // the layout would not pad), at least the mean T·k/E (on a miss the plan packs the
  // T·k rows, and E·R must hold them): none where the room is under the mean (a
  // capacity factor under 1), before any forward, or without speculation.
  std::int64_t speculated_rows(std::int64_t tokens) const;
  // The experts' rows of a plan made in `layout`: packed, each expert's kept count;
  // padded, R rows each, as the plan decided from the same counts
  // (kernels::plan::padded_rows). Null kept counts give R rows each without entries:
  // the static shapes' layout, or the one speculated rows are queued for.
  ExpertRows rows_of_plan(std::int64_t tokens, const std::vector<std::int64_t>* kept_per_expert,
                          const PlanLayout& layout) const;

  // After a forward padded to the most: what the next guess comes from.
  void remember(const std::vector<std::int64_t>& kept_per_expert, std::int64_t tokens);
  // How a forward's speculated rows (R per expert) fared: held (the plan kept them) or
  // missed.
  void count_speculation(std::int64_t rows, bool held) { ++(held ? hits_ : misses_), last_speculated_ = rows; }
  std::int64_t speculation_hits() const { return hits_; }
  std::int64_t speculation_misses() const { return misses_; }
  std::int64_t last_speculated_rows() const { return last_speculated_; }

 private:
  MOEConfig config_;
  bool static_shapes_, pad_to_most_, speculate_;
  std::int64_t last_most_kept_ = 0, last_tokens_ = 0;  // 0 tokens: no forward yet
  std::int64_t hits_ = 0, misses_ = 0, last_speculated_ = 0;
};

}  // namespace moe
