#include "expert_storage.hpp"

namespace moe {

void ExpertStorage::resize(std::int64_t n, const MOEConfig& config) {
  experts = n;
  hidden_dim = config.hidden_dim;
  expert_dim = config.expert_dim;
  for (int i = 0; i < 4; ++i) {
    Buffer<float>* b[] = {&w1, &w2, &b1, &b2};
    b[i]->resize(static_cast<std::size_t>(n * tensor_size(i)));
  }
}

void ExpertStorage::zero() {
  w1.zero();
  w2.zero();
  b1.zero();
  b2.zero();
}

std::int64_t ExpertStorage::tensor_size(int i) const {
  const std::int64_t H = hidden_dim, F = expert_dim;
  const std::int64_t sizes[] = {H * F, F * H, F, H};
  return sizes[i];
}

float* ExpertStorage::tensor(int i) {
  float* p[] = {w1.data(), w2.data(), b1.data(), b2.data()};
  return p[i];
}

const float* ExpertStorage::tensor(int i) const { return const_cast<ExpertStorage*>(this)->tensor(i); }

ExpertParams ExpertStorage::params(std::int64_t e) const {
  return ExpertParams{tensor(0) + e * tensor_size(0), tensor(1) + e * tensor_size(1), tensor(2) + e * tensor_size(2),
                      tensor(3) + e * tensor_size(3)};
}

void ExpertStorage::copy_to_flat(kernels::Ops& ops, std::int64_t e, float* flat) const {
  std::int64_t offset = 0;
  for (int i = 0; i < 4; ++i) {
    const std::int64_t n = tensor_size(i);
    ops.copy_to_host(flat + offset, tensor(i) + e * n, sizeof(float) * static_cast<std::size_t>(n));
    offset += n;
  }
}

void ExpertStorage::copy_from_flat(kernels::Ops& ops, std::int64_t e, const float* flat) {
  std::int64_t offset = 0;
  for (int i = 0; i < 4; ++i) {
    const std::int64_t n = tensor_size(i);
    ops.copy_from_host(tensor(i) + e * n, flat + offset, sizeof(float) * static_cast<std::size_t>(n));
    offset += n;
  }
}

}  // namespace moe
