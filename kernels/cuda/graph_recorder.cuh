// Recording a stream's work as a CUDA graph and replaying it (Ops::begin_capture,
// docs/design.md §4b). A recording keeps a pinned copy of every host upload it holds,
// so that each replay sends the same bytes, whatever the upload ring has sent since.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <vector>

#include "kernels/ops.hpp"

namespace moe::kernels::cuda {

class GraphRecorder {
 public:
  explicit GraphRecorder(cudaStream_t stream) : stream_(stream) {}
  GraphRecorder(const GraphRecorder&) = delete;
  GraphRecorder& operator=(const GraphRecorder&) = delete;
  ~GraphRecorder() { abort(); }

  bool recording() const { return recording_; }
  // The stream's next work is recorded, not run (the caller has drained the stream).
  void begin();
  // A host-to-device copy, recorded with a copy of its bytes that the graph keeps.
  void upload(void* device_dst, const void* host_src, std::size_t bytes);
  // The recording, ready to replay.
  std::unique_ptr<CapturedWork> end();
  // Ends a recording that failed part way, dropping what was recorded.
  void abort() noexcept;
  // Runs a recording on the stream.
  void replay(CapturedWork& work);

 private:
  cudaStream_t stream_;
  bool recording_ = false;
  std::vector<void*> uploads_;  // pinned copies of the recorded uploads' bytes
};

}  // namespace moe::kernels::cuda
