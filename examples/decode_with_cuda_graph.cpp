// Small-batch inference (a decoding step's tokens) on one GPU, recorded once as a CUDA
// graph and replayed: capacity-padded experts (LayerOptions::static_shapes) make every
// shape a function of the token count, so the forward needs no wait and can be
// recorded. Each replay reads whatever the input buffer holds then. With --dropless the
// layer has no capacity instead (drop_tokens = false, bf16): its experts' products read
// their row counts on the GPU, so it records without padding and drops no token (not
// yet run on a GPU, 2026-11-27).
//   build/examples/decode_with_cuda_graph [--dropless]   (exits 77, saying why, without a GPU)
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <moe/layer.hpp>

int main(int argc, char** argv) {
  const bool dropless = argc == 2 && std::string(argv[1]) == "--dropless";
  if (argc > 2 || (argc == 2 && !dropless)) {
    std::fprintf(stderr, "decode_with_cuda_graph: unexpected argument '%s'; usage: %s [--dropless]\n",
                 argv[argc - 1], argv[0]);
    return 2;
  }
  if (moe::cuda_device_count() == 0) {
    std::printf("decode_with_cuda_graph: no CUDA device; nothing to record\n");
    return 77;
  }
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  moe::MOEConfig config(/*num_experts=*/8, /*top_k=*/2, /*hidden_dim=*/1024, /*expert_dim=*/4096);
  config.drop_tokens = !dropless;
  moe::LayerOptions options;
  options.device = moe::Device::CUDA;
  options.precision = moe::Precision::BF16;
  options.static_shapes = !dropless;
  moe::MoELayer layer(config, *comm, /*seed=*/42, options);

  const std::int64_t tokens = 32;  // one decoding step of a batch of 32 sequences
  const std::size_t n = static_cast<std::size_t>(tokens * config.hidden_dim);
  float *input = nullptr, *output = nullptr;
  if (cudaMalloc(&input, n * sizeof(float)) != cudaSuccess || cudaMalloc(&output, n * sizeof(float)) != cudaSuccess) {
    std::fprintf(stderr, "decode_with_cuda_graph: cudaMalloc failed\n");
    return 1;
  }
  std::vector<float> host(n);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (auto& v : host) v = normal(rng);
  cudaMemcpy(input, host.data(), n * sizeof(float), cudaMemcpyHostToDevice);

  moe::ForwardGraph graph = layer.capture_forward(input, tokens, output);
  for (int step = 0; step < 4; ++step) {
    for (auto& v : host) v = normal(rng);  // the next step's tokens, into the same buffer
    cudaMemcpy(input, host.data(), n * sizeof(float), cudaMemcpyHostToDevice);
    graph.replay();
    layer.synchronize();
    cudaMemcpy(host.data(), output, n * sizeof(float), cudaMemcpyDeviceToHost);
    double norm = 0;
    for (float v : host) norm += double(v) * double(v);
    std::printf("step %d: output norm %.4f\n", step, std::sqrt(norm));
  }
  cudaFree(input);
  cudaFree(output);
  return 0;
}
