#include "dispatch_plan.hpp"

#include <cmath>
#include <limits>

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

ExpertAssignments token_assignments(const DispatchPlan& plan, const std::int32_t* indices,
                                    const float* weights) {
  ExpertAssignments out;
  out.num_experts = plan.num_experts;
  out.output_rows = plan.tokens;
  out.offsets.resize(static_cast<std::size_t>(plan.tokens + 1));
  const std::size_t kept = plan.kept.size() - static_cast<std::size_t>(plan.dropped);
  out.input_row.reserve(kept);
  out.expert.reserve(kept);
  out.weight.reserve(kept);
  out.offsets[0] = 0;
  for (std::int64_t t = 0; t < plan.tokens; ++t) {
    for (std::int64_t slot = 0; slot < plan.top_k; ++slot) {
      if (!plan.is_kept(t, slot)) continue;
      const std::int64_t a = t * plan.top_k + slot;
      out.input_row.push_back(static_cast<std::int32_t>(t));
      out.expert.push_back(indices[a]);
      out.weight.push_back(weights[a]);
    }
    out.offsets[static_cast<std::size_t>(t + 1)] = static_cast<std::int32_t>(out.expert.size());
  }
  return out;
}

ExpertGrouping group_by_expert(const ExpertAssignments& assignments) {
  const std::size_t experts = static_cast<std::size_t>(assignments.num_experts);
  const std::size_t count = assignments.expert.size();
  ExpertGrouping grouping;
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
  return grouping;
}

}  // namespace moe
