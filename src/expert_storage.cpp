#include "expert_storage.hpp"

namespace moe {

void ExpertStorage::resize(std::int64_t n, const ExpertLayout& l) {
  experts = n;
  layout = l;
  tensors.clear();
  for (const ExpertTensorSpec& t : layout.tensors) {
    tensors.emplace_back(*ops_);
    tensors.back().resize(static_cast<std::size_t>(n * t.count()));
  }
}

void ExpertStorage::zero() {
  for (auto& t : tensors) t.zero();
}

ExpertParams ExpertStorage::params(std::int64_t e) const {
  auto at = [&](ExpertTensorId id) -> const float* {
    const int i = layout.index(id);
    return i < 0 ? nullptr : tensor(static_cast<std::size_t>(i)) + e * tensor_size(static_cast<std::size_t>(i));
  };
  return ExpertParams{at(kWeightIn), at(kWeightOut), at(kBiasIn), at(kBiasOut)};
}

ExpertGradients ExpertStorage::grads(std::int64_t e) {
  const ExpertParams p = params(e);
  return ExpertGradients{const_cast<float*>(p.w_in), const_cast<float*>(p.w_out), const_cast<float*>(p.b_in),
                         const_cast<float*>(p.b_out)};
}

void ExpertStorage::copy_to_flat(std::int64_t e, float* flat) const {
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const std::int64_t n = tensor_size(i);
    ops_->copy_to_host(flat, tensor(i) + e * n, sizeof(float) * static_cast<std::size_t>(n));
    flat += n;
  }
}

void ExpertStorage::copy_from_flat(std::int64_t e, const float* flat) {
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const std::int64_t n = tensor_size(i);
    ops_->copy_from_host(tensor(i) + e * n, flat, sizeof(float) * static_cast<std::size_t>(n));
    flat += n;
  }
}

}  // namespace moe
