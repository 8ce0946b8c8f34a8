#include <cstdio>
#include <cstring>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/upload_ring.cuh"

namespace moe::kernels::cuda {

UploadRing::~UploadRing() {
  for (Slot& slot : slots_) {
    // Destructors never throw: failures are reported and the rest is still released.
    if (slot.sent && (cudaEventSynchronize(slot.sent) != cudaSuccess || cudaEventDestroy(slot.sent) != cudaSuccess))
      std::fprintf(stderr, "moe: releasing an upload slot's event failed\n");
    if (slot.host && cudaFreeHost(slot.host) != cudaSuccess) std::fprintf(stderr, "moe: cudaFreeHost failed\n");
  }
}

void UploadRing::upload(void* device_dst, const void* host_src, std::size_t bytes) {
  Slot& slot = slots_[static_cast<std::size_t>(next_)];
  next_ = (next_ + 1) % kSlots;
  if (slot.sent) MOE_CHECK(Cuda, cudaEventSynchronize(slot.sent));  // its last copy has left the slot
  else MOE_CHECK(Cuda, cudaEventCreateWithFlags(&slot.sent, cudaEventDisableTiming));
  if (slot.capacity < bytes) {
    if (slot.host) MOE_CHECK(Cuda, cudaFreeHost(slot.host));
    slot.host = nullptr, slot.capacity = 0;
    const std::size_t capacity = bytes < 4096 ? 4096 : bytes;
    MOE_CHECK(Cuda, cudaMallocHost(&slot.host, capacity));
    slot.capacity = capacity;
  }
  std::memcpy(slot.host, host_src, bytes);
  MOE_CHECK(Cuda, cudaMemcpyAsync(device_dst, slot.host, bytes, cudaMemcpyHostToDevice, stream_));
  MOE_CHECK(Cuda, cudaEventRecord(slot.sent, stream_));
}

}  // namespace moe::kernels::cuda
