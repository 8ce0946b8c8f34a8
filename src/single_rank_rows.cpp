#include "single_rank_rows.hpp"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "dispatch_plan.hpp"
#include "moe/error.hpp"

namespace moe {
namespace {

std::int64_t round_up(std::int64_t rows) {
  const std::int64_t multiple = kernels::plan::kPaddedRowsMultiple;
  return (rows + multiple - 1) / multiple * multiple;
}

}  // namespace

SingleRankRows::SingleRankRows(const MOEConfig& config, bool static_shapes, bool pad_to_most, bool speculate)
    : config_(config), static_shapes_(static_shapes), pad_to_most_(pad_to_most), speculate_(speculate) {}

bool SingleRankRows::pad_to_most_choice(int ranks, bool static_shapes, const char* plan, bool padded_by_default) {
  const char* asked = std::getenv("MOE_EXPERT_ROWS");
  if (!asked || !*asked) return padded_by_default;
  const std::string choice = asked;
  MOE_CHECK_ARG(choice == "packed" || choice == "padded", "MoELayer", "MOE_EXPERT_ROWS = '", choice,
                "'; expected packed, padded (each expert padded to the most rows kept, when they fit) or unset");
  if (choice == "packed") return false;
  MOE_CHECK_ARG(ranks == 1, "MoELayer", "MOE_EXPERT_ROWS = padded on ", ranks,
                " ranks; expected one rank (the padded layout is the single-rank plan's)");
  MOE_CHECK_ARG(!static_shapes, "MoELayer",
                "MOE_EXPERT_ROWS = padded with options.static_shapes = true; expected packed or unset (static "
                "shapes pad every expert to the capacity already)");
  MOE_CHECK_ARG(!plan || std::string(plan) != "host", "MoELayer",
                "MOE_EXPERT_ROWS = padded with MOE_SINGLE_RANK_PLAN = host; expected steps or unset (the padded "
                "layout is made by the plan steps)");
  return true;
}

bool SingleRankRows::speculate_choice() {
  const char* asked = std::getenv("MOE_SPECULATIVE_ROWS");
  if (!asked || !*asked) return false;
  const std::string choice = asked;
  MOE_CHECK_ARG(choice == "0" || choice == "1", "MoELayer", "MOE_SPECULATIVE_ROWS = '", choice,
                "'; expected 1 (padded experts' products queued for rows guessed from the last forward, before "
                "the wait for the routing), 0, or unset (0)");
  return choice == "1";
}

std::int64_t SingleRankRows::padded_rows_per_expert(std::int64_t tokens) const {
  const std::int64_t most = std::min(expert_capacity(config_, tokens), tokens);
  if (static_shapes_) return most;
  if (!pad_to_most_) return 0;
  const std::int64_t E = config_.num_experts;
  return round_up(std::min((5 * tokens * config_.top_k + 4 * E - 1) / (4 * E), most));
}

std::int64_t SingleRankRows::rows_bound(std::int64_t tokens) const {
  if (!pad_to_most_ || static_shapes_) return 0;
  return std::max(config_.num_experts * padded_rows_per_expert(tokens), tokens * config_.top_k);
}

PlanLayout SingleRankRows::plan_layout(std::int64_t tokens, std::int64_t speculated) const {
  if (speculated > 0) return {speculated, kernels::plan::Padding::RoomIfFits};
  return {padded_rows_per_expert(tokens), pad_to_most_ ? kernels::plan::Padding::Most : kernels::plan::Padding::Room};
}

std::int64_t SingleRankRows::speculated_rows(std::int64_t tokens) const {
  if (!speculate_ || !pad_to_most_ || static_shapes_ || last_tokens_ == 0 || tokens == 0) return 0;
  const std::int64_t E = config_.num_experts;
  const std::int64_t room = padded_rows_per_expert(tokens), mean = (tokens * config_.top_k + E - 1) / E;
  if (room < mean) return 0;
  const std::int64_t scaled = (last_most_kept_ * tokens + last_tokens_ - 1) / last_tokens_;
  return std::min(round_up(std::max(scaled + (scaled + 15) / 16, mean)), room);
}

ExpertRows SingleRankRows::rows_of_plan(std::int64_t tokens, const std::vector<std::int64_t>* kept_per_expert,
                                        const PlanLayout& layout) const {
  const std::int64_t room = layout.rows_per_expert;
  const std::int64_t rows_per_expert =
      kept_per_expert ? kernels::plan::padded_rows(kept_per_expert->data(), config_.num_experts, room, layout.padding)
                      : room;
  ExpertRows rows;
  rows.output_rows = tokens;
  rows.rows_bound = rows_bound(tokens);
  rows.padded = rows_per_expert > 0;
  rows.expert_offsets.assign(static_cast<std::size_t>(config_.num_experts) + 1, 0);
  for (std::size_t e = 0; e < static_cast<std::size_t>(config_.num_experts); ++e) {
    const std::int64_t kept = kept_per_expert ? (*kept_per_expert)[e] : 0;
    rows.expert_offsets[e + 1] = rows.expert_offsets[e] + (rows.padded ? rows_per_expert : kept);
    rows.entries += kept;
  }
  return rows;
}

void SingleRankRows::remember(const std::vector<std::int64_t>& kept_per_expert, std::int64_t tokens) {
  if (!pad_to_most_ || kept_per_expert.empty()) return;
  last_most_kept_ = *std::max_element(kept_per_expert.begin(), kept_per_expert.end());
  last_tokens_ = tokens;
}

}  // namespace moe
