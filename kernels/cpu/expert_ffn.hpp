// Ops::expert_ffn on the CPU: each thread runs whole expert FFNs on its own rows.
#pragma once

#include "kernels/ops.hpp"

namespace moe::kernels::cpu {

void expert_ffn(const ExpertBatch& batch, float* pre, float* hidden, float* out);

}  // namespace moe::kernels::cpu
