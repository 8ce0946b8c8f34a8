// Host-to-device copies that do not wait for the GPU. Ops::copy_from_host promises that
// the caller may reuse its host memory when it returns; a plain cudaMemcpy keeps that
// promise by stopping the host until the stream has drained, once per upload (the
// routing plan's arrays, the grouped GEMMs' pointer arrays). Instead, small copies go
// through a ring of pinned host slots: the bytes are copied into a slot on the host and
// sent with cudaMemcpyAsync; a slot is written again only after the event recorded
// behind its last copy has passed, which with kSlots slots is almost never a wait.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <cstddef>

namespace moe::kernels::cuda {

class UploadRing {
 public:
  static constexpr std::size_t kMaxBytes = std::size_t{4} << 20;  // larger copies wait, as cudaMemcpy would
  static constexpr int kSlots = 16;

  explicit UploadRing(cudaStream_t stream) : stream_(stream) {}
  UploadRing(const UploadRing&) = delete;
  UploadRing& operator=(const UploadRing&) = delete;
  ~UploadRing();

  // Queues the copy of bytes (≤ kMaxBytes) from host_src to device_dst on the stream.
  void upload(void* device_dst, const void* host_src, std::size_t bytes);

 private:
  struct Slot {
    void* host = nullptr;  // pinned
    std::size_t capacity = 0;
    cudaEvent_t sent = nullptr;  // recorded after the slot's last copy
  };
  cudaStream_t stream_;
  std::array<Slot, kSlots> slots_{};
  int next_ = 0;
};

}  // namespace moe::kernels::cuda
