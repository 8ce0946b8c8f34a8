// The one place that knows whether the CUDA backend was built.
#include "kernels/ops.hpp"
#include "moe/error.hpp"

#if MOE_HAVE_CUDA
#include "kernels/cuda/cuda_backend.hpp"
#endif

namespace moe::kernels {

bool cuda_built() { return MOE_HAVE_CUDA != 0; }

int cuda_device_count() {
#if MOE_HAVE_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

std::unique_ptr<Ops> make_cuda_ops(int device, GemmPrecision precision, bool high_priority) {
#if MOE_HAVE_CUDA
  return cuda::make_ops(device, precision, high_priority);
#else
  (void)device;
  (void)precision;
  (void)high_priority;
  detail::fail("make_cuda_ops", "this moe was built without CUDA (MOE_WITH_CUDA=OFF, or no nvcc found)");
#endif
}

}  // namespace moe::kernels
