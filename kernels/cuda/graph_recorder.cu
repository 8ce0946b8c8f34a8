#include <cstdio>
#include <cstring>

#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/graph_recorder.cuh"
#include "moe/error.hpp"

namespace moe::kernels::cuda {
namespace {

class CudaGraph final : public CapturedWork {
 public:
  CudaGraph(cudaGraph_t graph, cudaGraphExec_t exec, std::vector<void*> uploads) noexcept
      : graph_(graph), exec_(exec), uploads_(std::move(uploads)) {}
  ~CudaGraph() override {
    // Destructors never throw: failures are reported and the rest is still released.
    if (exec_ && cudaGraphExecDestroy(exec_) != cudaSuccess) std::fprintf(stderr, "moe: cudaGraphExecDestroy failed\n");
    if (graph_ && cudaGraphDestroy(graph_) != cudaSuccess) std::fprintf(stderr, "moe: cudaGraphDestroy failed\n");
    for (void* p : uploads_)
      if (cudaFreeHost(p) != cudaSuccess) std::fprintf(stderr, "moe: cudaFreeHost failed\n");
  }
  cudaGraphExec_t exec() const { return exec_; }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
  std::vector<void*> uploads_;
};

}  // namespace

void GraphRecorder::begin() {
  MOE_CHECK_ARG(!recording_, "Ops::begin_capture", "a recording is already in progress");
  // Relaxed: the recorded ops may still allocate (cuBLAS's first use of a shape).
  MOE_CHECK(Cuda, cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
  recording_ = true;
}

void GraphRecorder::upload(void* device_dst, const void* host_src, std::size_t bytes) {
  void* kept = nullptr;
  MOE_CHECK(Cuda, cudaMallocHost(&kept, bytes));
  uploads_.push_back(kept);
  std::memcpy(kept, host_src, bytes);
  MOE_CHECK(Cuda, cudaMemcpyAsync(device_dst, kept, bytes, cudaMemcpyHostToDevice, stream_));
}

std::unique_ptr<CapturedWork> GraphRecorder::end() {
  MOE_CHECK_ARG(recording_, "Ops::end_capture", "no recording was begun");
  recording_ = false;
  cudaGraph_t graph = nullptr;
  const cudaError_t status = cudaStreamEndCapture(stream_, &graph);
  if (status != cudaSuccess) {
    if (graph) (void)cudaGraphDestroy(graph);
    abort();
    MOE_CHECK(Cuda, status);
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
  if (instantiated != cudaSuccess) {
    (void)cudaGraphDestroy(graph);
    abort();  // frees the kept uploads
    MOE_CHECK(Cuda, instantiated);
  }
  std::vector<void*> uploads;
  uploads.swap(uploads_);
  return std::make_unique<CudaGraph>(graph, exec, std::move(uploads));
}

void GraphRecorder::abort() noexcept {
  if (recording_) {
    recording_ = false;
    cudaGraph_t graph = nullptr;
    if (cudaStreamEndCapture(stream_, &graph) == cudaSuccess && graph) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();  // a failed recording leaves an error that is not the next call's
  }
  for (void* p : uploads_)
    if (cudaFreeHost(p) != cudaSuccess) std::fprintf(stderr, "moe: cudaFreeHost failed\n");
  uploads_.clear();
}

void GraphRecorder::replay(CapturedWork& work) {
  auto* graph = dynamic_cast<CudaGraph*>(&work);
  MOE_CHECK_ARG(graph, "Ops::replay", "the work was not recorded by a GPU backend");
  MOE_CHECK(Cuda, cudaGraphLaunch(graph->exec(), stream_));
}

}  // namespace moe::kernels::cuda
