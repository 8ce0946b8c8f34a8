#include "dispatch_plan.hpp"

#include <cmath>
#include <limits>

#include "moe/error.hpp"

namespace moe {

std::int64_t expert_capacity(const MOEConfig& config, std::int64_t tokens) {
  if (!config.drop_tokens) return std::numeric_limits<std::int64_t>::max();
  const double exact = static_cast<double>(config.capacity_factor) * static_cast<double>(tokens) *
                       static_cast<double>(config.top_k) / static_cast<double>(config.num_experts);
  return static_cast<std::int64_t>(std::ceil(exact));
}

DispatchPlan make_dispatch_plan(const std::int32_t* indices, std::int64_t tokens,
                                const MOEConfig& config) {
  DispatchPlan plan;
  plan.tokens = tokens;
  plan.top_k = config.top_k;
  plan.num_experts = config.num_experts;
  plan.capacity = expert_capacity(config, tokens);
  plan.kept.assign(static_cast<std::size_t>(tokens * config.top_k), 0);
  plan.kept_per_expert.assign(static_cast<std::size_t>(config.num_experts), 0);

  // Slot-major admission: every token's first choice is served before anyone's second.
  for (std::int64_t slot = 0; slot < config.top_k; ++slot) {
    for (std::int64_t t = 0; t < tokens; ++t) {
      const std::int64_t a = t * config.top_k + slot;
      std::int64_t& load = plan.kept_per_expert[static_cast<std::size_t>(indices[a])];
      if (load < plan.capacity) {
        ++load;
        plan.kept[static_cast<std::size_t>(a)] = 1;
      } else {
        ++plan.dropped;
      }
    }
  }
  return plan;
}

void token_assignments(const DispatchPlan& plan, const std::int32_t* indices, const float* weights,
                       ExpertAssignments& out) {
  out.num_experts = plan.num_experts;
  out.output_rows = plan.tokens;
  out.offsets.resize(static_cast<std::size_t>(plan.tokens + 1));
  // clear() keeps the vectors' memory: a layer refills the same ones every forward.
  out.input_row.clear(), out.expert.clear(), out.weight.clear(), out.slot.clear();
  const std::size_t kept = plan.kept.size() - static_cast<std::size_t>(plan.dropped);
  out.input_row.reserve(kept);
  out.expert.reserve(kept);
  out.weight.reserve(kept);
  out.slot.reserve(kept);
  out.offsets[0] = 0;
  for (std::int64_t t = 0; t < plan.tokens; ++t) {
    for (std::int64_t slot = 0; slot < plan.top_k; ++slot) {
      if (!plan.is_kept(t, slot)) continue;
      const std::int64_t a = t * plan.top_k + slot;
      out.input_row.push_back(static_cast<std::int32_t>(t));
      out.expert.push_back(indices[a]);
      out.weight.push_back(weights[a]);
      out.slot.push_back(static_cast<std::int32_t>(a));
    }
    out.offsets[static_cast<std::size_t>(t + 1)] = static_cast<std::int32_t>(out.expert.size());
  }
}

ExpertAssignments token_assignments(const DispatchPlan& plan, const std::int32_t* indices, const float* weights) {
  ExpertAssignments out;
  token_assignments(plan, indices, weights, out);
  return out;
}

void group_by_expert(const ExpertAssignments& assignments, ExpertGrouping& grouping) {
  const std::size_t experts = static_cast<std::size_t>(assignments.num_experts);
  const std::size_t count = assignments.expert.size();
  grouping.expert_offsets.assign(experts + 1, 0);
  for (std::int32_t e : assignments.expert) ++grouping.expert_offsets[static_cast<std::size_t>(e) + 1];
  for (std::size_t e = 0; e < experts; ++e) grouping.expert_offsets[e + 1] += grouping.expert_offsets[e];

  // Counting sort, stable in assignment order.
  std::vector<std::int64_t> next(grouping.expert_offsets.begin(), grouping.expert_offsets.end() - 1);
  grouping.grouped_input_row.resize(count);
  grouping.grouped_row_of.resize(count);
  for (std::size_t a = 0; a < count; ++a) {
    const std::int64_t g = next[static_cast<std::size_t>(assignments.expert[a])]++;
    grouping.grouped_input_row[static_cast<std::size_t>(g)] = assignments.input_row[a];
    grouping.grouped_row_of[a] = static_cast<std::int32_t>(g);
  }
}

ExpertGrouping group_by_expert(const ExpertAssignments& assignments) {
  ExpertGrouping grouping;
  group_by_expert(assignments, grouping);
  return grouping;
}

SendLayout make_send_layout(const DispatchPlan& plan, const std::int32_t* indices,
                            const float* weights, int num_ranks, int own_rank, Traffic traffic) {
  const std::int64_t k = plan.top_k, T = plan.tokens;
  const std::int64_t experts_per_rank = plan.num_experts / num_ranks;
  const auto P = static_cast<std::size_t>(num_ranks);

  // Rows are built per destination in token order, then concatenated in rank order with
  // this rank's own last.
  struct RowsForRank {
    std::vector<std::int32_t> token, slot;
    std::vector<AssignmentRecord> records;
  };
  std::vector<RowsForRank> by_rank(P);
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::int64_t j = 0; j < k; ++j) {
      if (!plan.is_kept(t, j)) continue;
      const std::int64_t a = t * k + j;
      const auto owner = static_cast<std::size_t>(indices[a] / experts_per_rank);
      RowsForRank& dest = by_rank[owner];
      // In deduplicated mode a token's later slots for the same owner join its row.
      const bool joins_row = traffic == Traffic::Deduplicated && !dest.token.empty() &&
                             dest.token.back() == static_cast<std::int32_t>(t);
      if (!joins_row) dest.token.push_back(static_cast<std::int32_t>(t));
      AssignmentRecord record{};
      record.local_expert = static_cast<std::uint32_t>(indices[a] - static_cast<std::int64_t>(owner) * experts_per_rank);
      record.starts_row = joins_row ? 0 : 1;
      record.weight = weights[a];
      dest.records.push_back(record);
      dest.slot.push_back(static_cast<std::int32_t>(a));
    }
  }

  SendLayout layout;
  layout.own_rank = own_rank;
  layout.rows_per_rank.resize(P);
  layout.assignments_per_rank.resize(P);
  std::vector<std::size_t> order;
  for (std::size_t p = 0; p < P; ++p)
    if (p != static_cast<std::size_t>(own_rank)) order.push_back(p);
  order.push_back(static_cast<std::size_t>(own_rank));
  for (std::size_t p : order) {
    RowsForRank& dest = by_rank[p];
    layout.rows_per_rank[p] = static_cast<std::int64_t>(dest.token.size());
    layout.assignments_per_rank[p] = static_cast<std::int64_t>(dest.records.size());
    layout.row_token.insert(layout.row_token.end(), dest.token.begin(), dest.token.end());
    layout.assignments.insert(layout.assignments.end(), dest.records.begin(), dest.records.end());
    layout.assignment_slot.insert(layout.assignment_slot.end(), dest.slot.begin(), dest.slot.end());
  }

  // Each token's rows, for summing the rows that come back.
  layout.token_offsets.assign(static_cast<std::size_t>(T + 1), 0);
  for (std::int32_t t : layout.row_token) ++layout.token_offsets[static_cast<std::size_t>(t) + 1];
  for (std::int64_t t = 0; t < T; ++t)
    layout.token_offsets[static_cast<std::size_t>(t + 1)] += layout.token_offsets[static_cast<std::size_t>(t)];
  std::vector<std::int32_t> next(layout.token_offsets.begin(), layout.token_offsets.end() - 1);
  layout.token_rows.resize(layout.row_token.size());
  for (std::size_t r = 0; r < layout.row_token.size(); ++r)
    layout.token_rows[static_cast<std::size_t>(next[static_cast<std::size_t>(layout.row_token[r])]++)] =
        static_cast<std::int32_t>(r);
  return layout;
}

ExpertAssignments received_assignments(const AssignmentRecord* records, std::int64_t count, std::int64_t rows,
                                       std::int64_t num_local_experts) {
  ExpertAssignments out;
  out.num_experts = num_local_experts;
  out.output_rows = rows;
  out.input_row.resize(static_cast<std::size_t>(count));
  out.expert.resize(static_cast<std::size_t>(count));
  out.weight.resize(static_cast<std::size_t>(count));
  for (std::int64_t a = 0; a < count; ++a) {
    if (records[a].starts_row) out.offsets.push_back(static_cast<std::int32_t>(a));
    MOE_CHECK_ARG(!out.offsets.empty(), "received_assignments", "the first record does not start a row");
    out.input_row[static_cast<std::size_t>(a)] = static_cast<std::int32_t>(out.offsets.size() - 1);
    out.expert[static_cast<std::size_t>(a)] = static_cast<std::int32_t>(records[a].local_expert);
    out.weight[static_cast<std::size_t>(a)] = records[a].weight;
  }
  out.offsets.push_back(static_cast<std::int32_t>(count));
  MOE_CHECK_ARG(static_cast<std::int64_t>(out.offsets.size()) == rows + 1, "received_assignments", count,
                " records start ", out.offsets.size() - 1, " rows; ", rows, " rows arrived");
  return out;
}

}  // namespace moe
