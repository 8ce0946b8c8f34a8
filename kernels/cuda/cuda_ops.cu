// The CUDA backend: device memory, one stream, cuBLAS for every matrix product and a
// kernel per element-wise or per-row op (each in its own .cu, sharing its per-element
// logic with the CPU through kernels/*.hpp and the .cuh headers).
#include <cstdio>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/optimizer.cuh"
#include "kernels/cuda/reductions.cuh"
#include "kernels/cuda/router.cuh"
#include "kernels/cuda/rows.cuh"

namespace moe::kernels::cuda {
namespace {

class CudaOps final : public Ops {
 public:
  CudaOps(int device, GemmPrecision precision) : device_(device), precision_(precision) {
    MOE_CHECK(Cuda, cudaSetDevice(device));
    MOE_CHECK(Cuda, cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    MOE_CHECK(Cublas, cublasCreate(&blas_));
    MOE_CHECK(Cublas, cublasSetStream(blas_, stream_));
  }

  ~CudaOps() override {
    // Destructors never throw: failures are reported and the rest is still released.
    for (auto& w : weight_cache_) release(w.bf16);
    release(bf16_input_);
    release(scratch_);
    release(doubles_);
    if (blas_ && cublasDestroy(blas_) != CUBLAS_STATUS_SUCCESS) std::fprintf(stderr, "moe: cublasDestroy failed\n");
    if (stream_ && cudaStreamDestroy(stream_) != cudaSuccess) std::fprintf(stderr, "moe: cudaStreamDestroy failed\n");
  }

  Backend backend() const override { return Backend::CUDA; }

  void* allocate(std::size_t bytes) override {
    void* ptr = nullptr;
    MOE_CHECK(Cuda, cudaMalloc(&ptr, bytes ? bytes : 1));
    sizes_[ptr] = bytes;
    return ptr;
  }
  void deallocate(void* ptr) noexcept override {
    // Memory freed may come back for other weights: drop the bf16 copies made from it.
    const auto it = sizes_.find(ptr);
    if (it != sizes_.end()) {
      touched(ptr, it->second);
      sizes_.erase(it);
    }
    release(ptr);
  }
  void copy_to_host(void* host_dst, const void* src, std::size_t bytes) override {
    if (!bytes) return;
    MOE_CHECK(Cuda, cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    synchronize();
  }
  void copy_from_host(void* dst, const void* host_src, std::size_t bytes) override {
    if (!bytes) return;
    touched(dst, bytes);
    MOE_CHECK(Cuda, cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
    synchronize();  // the caller may reuse its host memory as soon as this returns
  }
  void copy(void* dst, const void* src, std::size_t bytes) override {
    if (!bytes) return;
    touched(dst, bytes);
    MOE_CHECK(Cuda, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void fill_zero(void* dst, std::size_t bytes) override {
    if (!bytes) return;
    touched(dst, bytes);
    MOE_CHECK(Cuda, cudaMemsetAsync(dst, 0, bytes, stream_));
  }
  void synchronize() override { MOE_CHECK(Cuda, cudaStreamSynchronize(stream_)); }
  void written_elsewhere(const void* dst, std::size_t bytes) override { touched(dst, bytes); }

  void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
            std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) override {
    // BF16 applies to the expert GEMMs of the forward (linear); everything else is FP32
    // or, when asked, TF32.
    const GemmPrecision p = precision_ == GemmPrecision::TF32 ? GemmPrecision::TF32 : GemmPrecision::FP32;
    cuda::gemm(blas_, p, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }

  void linear(const float* x, std::int64_t n, std::int64_t in_dim, const float* w, std::int64_t out_dim,
              const float* bias, Act act, float* pre_act, float* out) override {
    if (n == 0) return;
    float* target = pre_act ? pre_act : out;
    if (precision_ == GemmPrecision::BF16) {
      void* xb = bf16_scratch(static_cast<std::size_t>(n * in_dim));
      launch_to_bf16(x, n * in_dim, xb, stream_);
      cuda::gemm(blas_, GemmPrecision::BF16, false, false, n, out_dim, in_dim, 1.0f, xb, in_dim,
                 bf16_weights(w, static_cast<std::size_t>(in_dim * out_dim)), out_dim, 0.0f, target, out_dim);
    } else {
      cuda::gemm(blas_, precision_, false, false, n, out_dim, in_dim, 1.0f, x, in_dim, w, out_dim, 0.0f, target,
                 out_dim);
    }
    launch_bias_activation(target, bias, n * out_dim, out_dim, act, pre_act, out, stream_);
  }

  void grouped_linear(const float* x, const std::vector<std::int64_t>& row_offsets, std::int64_t in_dim,
                      const std::vector<const float*>& weights, std::int64_t out_dim,
                      const std::vector<const float*>& biases, Act act, float* pre_act, float* out) override {
    const int groups = static_cast<int>(row_offsets.size()) - 1;
    const std::int64_t total = row_offsets.back() - row_offsets.front();
    if (groups <= 0 || total == 0) return;
    if (precision_ == GemmPrecision::BF16) {
      // The grouped GEMM writes bf16 results for bf16 inputs; the layer keeps FP32
      // activations, so bf16 runs one cublasGemmEx per expert on the stream.
      for (int g = 0; g < groups; ++g) {
        const std::int64_t begin = row_offsets[g], rows = row_offsets[g + 1] - begin;
        if (rows)
          linear(x + begin * in_dim, rows, in_dim, weights[g], out_dim, biases[g], act,
                 pre_act ? pre_act + begin * out_dim : nullptr, out + begin * out_dim);
      }
      return;
    }
    float* target = pre_act ? pre_act : out;
    // The non-empty groups' operands, as device arrays of pointers.
    std::vector<int> rows;
    std::vector<const float*> pointers;  // a (x rows), b (weights), c (target), each groups long
    std::vector<const float*> a, b;
    std::vector<float*> c;
    for (int g = 0; g < groups; ++g) {
      const std::int64_t begin = row_offsets[g], n = row_offsets[g + 1] - begin;
      if (n == 0) continue;
      rows.push_back(static_cast<int>(n));
      a.push_back(x + begin * in_dim), b.push_back(weights[g]), c.push_back(target + begin * out_dim);
    }
    const std::size_t used = rows.size();
    pointers.insert(pointers.end(), a.begin(), a.end());
    pointers.insert(pointers.end(), b.begin(), b.end());
    pointers.insert(pointers.end(), c.begin(), c.end());
    pointers.insert(pointers.end(), biases.begin(), biases.end());
    auto** device = static_cast<const float**>(scratch_bytes(pointers.size() * sizeof(float*) +
                                                             row_offsets.size() * sizeof(std::int64_t)));
    copy_from_host(device, pointers.data(), pointers.size() * sizeof(float*));
    auto* offsets = reinterpret_cast<std::int64_t*>(device + pointers.size());
    copy_from_host(offsets, row_offsets.data(), row_offsets.size() * sizeof(std::int64_t));
    cuda::grouped_gemm(blas_, precision_, rows, static_cast<int>(out_dim), static_cast<int>(in_dim), device,
                       device + used, const_cast<float* const*>(device + 2 * used));
    launch_grouped_bias_activation(target + row_offsets.front() * out_dim, device + 3 * used, offsets, groups,
                                   total * out_dim, out_dim, act, pre_act ? pre_act + row_offsets.front() * out_dim : nullptr,
                                   out + row_offsets.front() * out_dim, stream_);
  }

  void route(const float* logits, std::int64_t tokens, const RouterParams& params, const float* expert_bias,
             float* probs, std::int32_t* indices, float* weights, float* lse) override {
    launch_route(logits, tokens, params, expert_bias, probs, indices, weights, lse, stream_);
  }

  void glu(const float* z, std::int64_t n, std::int64_t width, Act act, float* h) override {
    launch_glu(z, n, width, act, h, stream_);
  }
  void glu_backward(const float* z, const float* dh, std::int64_t n, std::int64_t width, Act act,
                    float* dz) override {
    launch_glu_backward(z, dh, n, width, act, dz, stream_);
  }
  void gated_add(const float* y, const float* gate_logit, std::int64_t n, std::int64_t width, float* out) override {
    launch_gated_add(y, gate_logit, n, width, out, stream_);
  }
  void gated_add_backward(const float* d_out, const float* y, const float* gate_logit, std::int64_t n,
                          std::int64_t width, float* d_y, float* d_gate_logit) override {
    launch_gated_add_backward(d_out, y, gate_logit, n, width, d_y, d_gate_logit, stream_);
  }

  void gather_rows(const float* src, const std::int32_t* rows, std::int64_t n, std::int64_t width, float* dst) override {
    launch_gather_rows(src, rows, n, width, dst, stream_);
  }

  void combine_rows(const float* src, std::int64_t width, std::int64_t n_out, const std::int32_t* offsets,
                    const std::int32_t* sources, const float* weights, float* dst) override {
    launch_combine_rows(src, width, n_out, offsets, sources, weights, dst, stream_);
  }

  void column_sums(const float* m, std::int64_t rows, std::int64_t cols, double* host_sums) override {
    double* sums = doubles(static_cast<std::size_t>(cols));
    launch_column_sums(m, rows, cols, sums, stream_);
    copy_to_host(host_sums, sums, sizeof(double) * static_cast<std::size_t>(cols));
  }

  void combine_backward(const float* d_dst, const float* src, std::int64_t width, std::int64_t n_out,
                        const std::int32_t* offsets, const std::int32_t* sources, const float* weights, float* d_src,
                        float* d_weights) override {
    launch_combine_backward(d_dst, src, width, n_out, offsets, sources, weights, d_src, d_weights, stream_);
  }

  void activation_backward(const float* z, const float* dh, std::int64_t n, Act act, float* dz) override {
    launch_activation_backward(z, dh, n, act, dz, stream_);
  }

  void add_column_sums(const float* m, std::int64_t rows, std::int64_t cols, float* sums) override {
    launch_add_column_sums(m, rows, cols, sums, stream_);
  }

  void router_backward(const float* logits, const float* probs, const std::int32_t* indices, const float* d_weights,
                       const float* lse, std::int64_t tokens, const RouterParams& params, const float* aux_grad,
                       float z_scale, float* d_logits) override {
    launch_router_backward(logits, probs, indices, d_weights, lse, tokens, params, aux_grad, z_scale, d_logits,
                           stream_);
  }

  void add(float* x, const float* y, std::int64_t n) override {
    touched(x, sizeof(float) * static_cast<std::size_t>(n));
    launch_add(x, y, n, stream_);
  }
  void scale(float* x, std::int64_t n, float s) override {
    touched(x, sizeof(float) * static_cast<std::size_t>(n));
    launch_scale(x, n, s, stream_);
  }
  double sum_squares(const float* x, std::int64_t n) override {
    const int blocks = sum_squares_blocks(n);
    if (blocks == 0) return 0.0;
    double* partials = doubles(static_cast<std::size_t>(blocks));
    launch_sum_squares(x, n, partials, stream_);
    std::vector<double> host(static_cast<std::size_t>(blocks));
    copy_to_host(host.data(), partials, sizeof(double) * host.size());
    double total = 0.0;
    for (double p : host) total += p;  // in block order: the same bits every time
    return total;
  }
  void sgd_update(float* param, const float* grad, float* momentum, std::int64_t n, float lr, float mu,
                  float weight_decay) override {
    touched(param, sizeof(float) * static_cast<std::size_t>(n));
    launch_sgd(param, grad, momentum, n, lr, mu, weight_decay, stream_);
  }
  void adamw_update(float* param, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1,
                    float beta2, float eps, float weight_decay, float correction1, float correction2) override {
    touched(param, sizeof(float) * static_cast<std::size_t>(n));
    launch_adamw(param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, correction1, correction2, stream_);
  }

 private:
  // BF16 copies of expert weights, made once and kept until the weights change: every
  // op that writes memory reports it through touched(), which drops overlapping copies.
  struct CachedWeights {
    const float* source;
    std::size_t count;
    void* bf16;
  };

  void* bf16_weights(const float* w, std::size_t count) {
    for (auto& c : weight_cache_)
      if (c.source == w && c.count == count) return c.bf16;
    void* copy = allocate(count * 2);
    launch_to_bf16(w, static_cast<std::int64_t>(count), copy, stream_);
    weight_cache_.push_back({w, count, copy});
    return copy;
  }

  void touched(const void* dst, std::size_t bytes) {
    const char* begin = static_cast<const char*>(dst);
    const char* end = begin + bytes;
    for (std::size_t i = 0; i < weight_cache_.size();) {
      const char* b = reinterpret_cast<const char*>(weight_cache_[i].source);
      const char* e = b + weight_cache_[i].count * sizeof(float);
      if (begin < e && b < end) {
        release(weight_cache_[i].bf16);
        weight_cache_.erase(weight_cache_.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        ++i;
      }
    }
  }

  // Small per-call device scratch (pointer arrays, offsets); grows, never shrinks.
  void* scratch_bytes(std::size_t bytes) {
    if (bytes > scratch_size_) {
      release(scratch_);
      scratch_ = allocate(bytes);
      scratch_size_ = bytes;
    }
    return scratch_;
  }

  void* bf16_scratch(std::size_t count) {
    if (count * 2 > bf16_input_bytes_) {
      release(bf16_input_);
      bf16_input_ = allocate(count * 2);
      bf16_input_bytes_ = count * 2;
    }
    return bf16_input_;
  }

  double* doubles(std::size_t count) {
    if (count > doubles_count_) {
      release(doubles_);
      doubles_ = static_cast<double*>(allocate(count * sizeof(double)));
      doubles_count_ = count;
    }
    return doubles_;
  }

  void release(void* ptr) noexcept {
    if (!ptr) return;
    sizes_.erase(ptr);
    if (cudaFree(ptr) != cudaSuccess) std::fprintf(stderr, "moe: cudaFree failed\n");
  }

  int device_;
  GemmPrecision precision_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  std::vector<CachedWeights> weight_cache_;
  std::unordered_map<void*, std::size_t> sizes_;  // of every allocation, to invalidate on free
  void* scratch_ = nullptr;
  std::size_t scratch_size_ = 0;
  void* bf16_input_ = nullptr;
  std::size_t bf16_input_bytes_ = 0;
  double* doubles_ = nullptr;
  std::size_t doubles_count_ = 0;
};

}  // namespace

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no device: not an error for the caller
    return 0;
  }
  return count;
}

std::unique_ptr<Ops> make_ops(int device, GemmPrecision precision) {
  return std::make_unique<CudaOps>(device, precision);
}

}  // namespace moe::kernels::cuda
