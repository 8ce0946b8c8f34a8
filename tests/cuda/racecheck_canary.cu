// A shared-memory race on purpose, for the prepared GPU check alone
// (scripts/gpu-check.sh, section 6): racecheck runs on it before the tests, so that the
// tests' zero hazards are from a tool seen to report a race where there is one.
// Not a test: nothing else runs it. Exit 0 when CUDA reported no error.
#include <cuda_runtime.h>

#include <cstdio>

namespace moe::kernels::cuda::canary {

// Every thread writes the one shared cell and reads it back, with no barrier between:
// write-after-write and read-after-write hazards across the block's warps. Volatile, so
// that the compiler keeps the read rather than forwarding the thread's own store to it.
__global__ void racing_kernel(int* out) {
  __shared__ volatile int cell;
  cell = static_cast<int>(threadIdx.x);
  out[threadIdx.x] = cell;
}

}  // namespace moe::kernels::cuda::canary

int main() {
  constexpr int kThreads = 128;
  int* out = nullptr;
  cudaError_t status = cudaMalloc(&out, sizeof(int) * kThreads);
  if (status == cudaSuccess) {
    moe::kernels::cuda::canary::racing_kernel<<<1, kThreads>>>(out);
    status = cudaGetLastError();
    if (status == cudaSuccess) status = cudaDeviceSynchronize();
    const cudaError_t freed = cudaFree(out);
    if (status == cudaSuccess) status = freed;
  }
  if (status != cudaSuccess) std::fprintf(stderr, "racecheck_canary: %s\n", cudaGetErrorString(status));
  return status == cudaSuccess ? 0 : 1;
}
