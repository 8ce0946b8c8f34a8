// The CUDA backend as the ops factory sees it (plain C++: no CUDA headers needed).
#pragma once

#include <memory>

#include "kernels/ops.hpp"

namespace moe::kernels::cuda {

int device_count();
std::unique_ptr<Ops> make_ops(int device, GemmPrecision precision, bool high_priority);

}  // namespace moe::kernels::cuda
