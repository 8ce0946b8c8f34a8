#include "expert_layout.hpp"

#include <cstring>

namespace moe {

ExpertLayout expert_layout(ExpertKind kind, bool bias, std::int64_t H, std::int64_t F) {
  ExpertLayout l;
  l.kind = kind;
  l.bias = bias;
  l.hidden = H;
  l.width = F;
  const bool glu = kind == ExpertKind::GLU;
  l.in_width = (glu ? 2 : 1) * F;
  l.tensors = {{kWeightIn, H, l.in_width, glu ? "w_gate_up" : "w1"}, {kWeightOut, F, H, glu ? "w_down" : "w2"}};
  if (bias)
    l.tensors.push_back({kBiasIn, 1, l.in_width, glu ? "b_gate_up" : "b1"}),
        l.tensors.push_back({kBiasOut, 1, H, glu ? "b_down" : "b2"});
  const char* in_axes = "(hidden_dim, expert_dim)";
  if (!glu) {
    l.datasets = {{"w1", 0, 0, F, {H, F}, H, 0, in_axes}, {"w2", 1, 0, H, {F, H}, F, 1, "(expert_dim, hidden_dim)"}};
    if (bias) l.datasets.push_back({"b1", 2, 0, F, {F}, H, 2, "(expert_dim)"}),
        l.datasets.push_back({"b2", 3, 0, H, {H}, F, 3, "(hidden_dim)"});
  } else {
    l.datasets = {{"w_gate", 0, 0, F, {H, F}, H, 0, in_axes},
                  {"w_up", 0, F, F, {H, F}, H, 1, in_axes},
                  {"w_down", 1, 0, H, {F, H}, F, 2, "(expert_dim, hidden_dim)"}};
    if (bias) {
      l.datasets.push_back({"b_gate", 2, 0, F, {F}, H, 3, "(expert_dim)"});
      l.datasets.push_back({"b_up", 2, F, F, {F}, H, 4, "(expert_dim)"});
      l.datasets.push_back({"b_down", 3, 0, H, {H}, F, 5, "(hidden_dim)"});
    }
  }
  for (const ExpertTensorSpec& t : l.tensors) l.param_count += t.count();
  return l;
}

ExpertLayout expert_layout(const MOEConfig& c) {
  return expert_layout(c.expert_kind, c.expert_bias, c.hidden_dim, c.expert_dim);
}

ExpertLayout shared_expert_layout(const MOEConfig& c) {
  return expert_layout(c.expert_kind, c.expert_bias, c.hidden_dim, c.shared_expert_dim);
}

int ExpertLayout::index(ExpertTensorId id) const {
  for (std::size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].id == id) return static_cast<int>(i);
  return -1;
}

std::int64_t ExpertLayout::flat_offset(int tensor) const {
  std::int64_t offset = 0;
  for (int i = 0; i < tensor; ++i) offset += tensors[static_cast<std::size_t>(i)].count();
  return offset;
}

bool dataset_is_whole_tensor(const ExpertLayout& layout, const ExpertDatasetSpec& d) {
  return d.col_begin == 0 && d.cols == layout.tensors[static_cast<std::size_t>(d.tensor)].cols;
}

namespace {

// Row by row between a [experts·rows, tensor cols] block and a [experts·rows, d.cols] one.
template <bool Out>
void copy_columns(const ExpertLayout& layout, const ExpertDatasetSpec& d, const float* src, std::int64_t experts,
                  float* dst) {
  const ExpertTensorSpec& t = layout.tensors[static_cast<std::size_t>(d.tensor)];
  const std::size_t bytes = sizeof(float) * static_cast<std::size_t>(d.cols);
  for (std::int64_t r = 0; r < experts * t.rows; ++r) {
    if (Out) std::memcpy(dst + r * d.cols, src + r * t.cols + d.col_begin, bytes);
    else std::memcpy(dst + r * t.cols + d.col_begin, src + r * d.cols, bytes);
  }
}

}  // namespace

void copy_dataset_out(const ExpertLayout& layout, const ExpertDatasetSpec& d, const float* tensor_block,
                      std::int64_t experts, float* out) {
  copy_columns<true>(layout, d, tensor_block, experts, out);
}

void copy_dataset_in(const ExpertLayout& layout, const ExpertDatasetSpec& d, const float* in, std::int64_t experts,
                     float* tensor_block) {
  copy_columns<false>(layout, d, in, experts, tensor_block);
}

}  // namespace moe
