// The CPU backend: cblas_sgemm for every matrix product (kernels/cpu/parallel_gemm),
// OpenMP for the row-wise and element-wise passes.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <vector>

#include "kernels/cpu/elementwise.hpp"
#include "kernels/cpu/expert_ffn.hpp"
#include "kernels/cpu/parallel_gemm.hpp"
#include "kernels/ops.hpp"
#include "moe/error.hpp"
#include "kernels/optimizer_math.hpp"
#include "kernels/router_row.hpp"

namespace moe::kernels {
namespace {

class CpuOps final : public Ops {
 public:
  Backend backend() const override { return Backend::CPU; }

  void* allocate(std::size_t bytes) override {
    void* ptr = nullptr;
    // moe::Error, not std::bad_alloc: the caller adds what the memory was for.
    if (posix_memalign(&ptr, 64, std::max<std::size_t>(bytes, 64)) != 0)
      throw Error(detail::concat("Failed to allocate memory: ", bytes, " bytes of host memory"));
    return ptr;
  }
  void deallocate(void* ptr) noexcept override {
    if (ptr) frees_.fetch_add(1, std::memory_order_relaxed);
    std::free(ptr);
  }
  // Counted as on a GPU, so that the CPU tests can hold the layer's buffers to what a
  // captured graph needs (docs/design.md §4b); the CPU records nothing itself.
  std::uint64_t memory_epoch() const override { return frees_.load(std::memory_order_relaxed); }
  void copy_to_host(void* dst, const void* src, std::size_t bytes) override { copy(dst, src, bytes); }
  void copy_from_host(void* dst, const void* src, std::size_t bytes) override { copy(dst, src, bytes); }
  void copy(void* dst, const void* src, std::size_t bytes) override {
    if (bytes) std::memmove(dst, src, bytes);
  }
  void fill_zero(void* dst, std::size_t bytes) override {
    if (bytes) std::memset(dst, 0, bytes);
  }
  void synchronize() override {}

  void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
            float alpha, const float* a, std::int64_t lda, const float* b, std::int64_t ldb,
            float beta, float* c, std::int64_t ldc) override {
    cpu::parallel_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }

  void linear(const float* x, std::int64_t n, std::int64_t in_dim, const float* w,
              std::int64_t out_dim, const float* bias, Act act, float* pre_act,
              float* out) override {
    float* target = pre_act ? pre_act : out;
    // Seeding C with the bias and running the GEMM with beta = 1 folds the bias add
    // into the GEMM's own pass over C.
    cpu::BlockPrologue seed_bias;
    if (bias) {
      seed_bias = [&](std::int64_t r0, std::int64_t r1, std::int64_t c0, std::int64_t c1) {
        for (std::int64_t r = r0; r < r1; ++r)
          std::memcpy(target + r * out_dim + c0, bias + c0, sizeof(float) * static_cast<std::size_t>(c1 - c0));
      };
    }
    cpu::BlockEpilogue apply_activation;
    if (act != Act::Identity || target != out) {
      apply_activation = [&](std::int64_t r0, std::int64_t r1, std::int64_t c0, std::int64_t c1) {
        for (std::int64_t r = r0; r < r1; ++r)
          cpu::activation_run(act, target + r * out_dim + c0, out + r * out_dim + c0, c1 - c0);
      };
    }
    cpu::parallel_gemm(false, false, n, out_dim, in_dim, 1.0f, x, in_dim, w, out_dim,
                       bias ? 1.0f : 0.0f, target, out_dim, seed_bias, apply_activation);
  }

  void grouped_linear(const float* x, const std::vector<std::int64_t>& row_offsets, std::int64_t in_dim,
                      const std::vector<const float*>& weights, std::int64_t out_dim,
                      const std::vector<const float*>& biases, Act act, float* pre_act, float* out) override {
    // One GEMM per group, each split across the cores (measured: running whole groups
    // one per thread was no faster, even for 64 small experts).
    for (std::size_t g = 0; g + 1 < row_offsets.size(); ++g) {
      const std::int64_t begin = row_offsets[g], rows = row_offsets[g + 1] - begin;
      if (rows == 0) continue;
      linear(x + begin * in_dim, rows, in_dim, weights[g], out_dim, biases[g], act,
             pre_act ? pre_act + begin * out_dim : nullptr, out + begin * out_dim);
    }
  }

  void expert_ffn(const ExpertBatch& batch, float* pre, float* hidden, float* out) override {
    cpu::expert_ffn(batch, pre, hidden, out);
  }

  void for_each_concurrently(std::int64_t count, const std::function<void(std::int64_t)>& fn) override {
    cpu::SingleThreadedBlas single_threaded;  // the process-wide setting, before the threads start
    // An exception may not leave an OpenMP region: the first is kept and rethrown.
    std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 1)
    for (std::int64_t i = 0; i < count; ++i) {
      try {
        fn(i);
      } catch (...) {
#pragma omp critical(moe_for_each_concurrently)
        if (!failure) failure = std::current_exception();
      }
    }
    if (failure) std::rethrow_exception(failure);
  }

  void route(const float* logits, std::int64_t tokens, const RouterParams& params, const float* expert_bias,
             float* probs, std::int32_t* indices, float* weights, float* lse) override {
    const int E = params.num_experts, k = params.top_k;
#pragma omp parallel for schedule(static)
    for (std::int64_t t = 0; t < tokens; ++t) {
      const float row_lse = route_row(logits + t * E, params, expert_bias, probs + t * E, indices + t * k,
                                      weights + t * k);
      if (lse) lse[t] = row_lse;
    }
  }

  void glu(const float* z, std::int64_t n, std::int64_t width, Act act, float* h) override {
#pragma omp parallel for schedule(static)
    for (std::int64_t r = 0; r < n; ++r) cpu::glu_rows(act, z + r * 2 * width, 1, width, h + r * width);
  }

  void glu_backward(const float* z, const float* dh, std::int64_t n, std::int64_t width, Act act,
                    float* dz) override {
#pragma omp parallel for schedule(static)
    for (std::int64_t r = 0; r < n; ++r) {
      const float* gate = z + r * 2 * width;
      cpu::glu_backward_run(act, gate, gate + width, dh + r * width, dz + r * 2 * width, dz + r * 2 * width + width,
                            width);
    }
  }

  void gated_add(const float* y, const float* gate_logit, std::int64_t n, std::int64_t width, float* out) override {
#pragma omp parallel for schedule(static)
    for (std::int64_t r = 0; r < n; ++r) {
      const float g = gate_logit ? sigmoid(gate_logit[r]) : 1.0f;
#pragma omp simd
      for (std::int64_t h = 0; h < width; ++h) out[r * width + h] += g * y[r * width + h];
    }
  }

  void gated_add_backward(const float* d_out, const float* y, const float* gate_logit, std::int64_t n,
                          std::int64_t width, float* d_y, float* d_gate_logit) override {
#pragma omp parallel for schedule(static)
    for (std::int64_t r = 0; r < n; ++r) {
      const float g = gate_logit ? sigmoid(gate_logit[r]) : 1.0f;
      double dot = 0.0;
      for (std::int64_t h = 0; h < width; ++h) {
        d_y[r * width + h] = g * d_out[r * width + h];
        dot += double(d_out[r * width + h]) * double(y[r * width + h]);
      }
      if (gate_logit && d_gate_logit) d_gate_logit[r] = static_cast<float>(dot) * g * (1.0f - g);
    }
  }

  void gather_rows(const float* src, const std::int32_t* rows, std::int64_t n,
                   std::int64_t width, float* dst) override {
    const std::size_t row_bytes = sizeof(float) * static_cast<std::size_t>(width);
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) {
      if (rows[i] < 0) std::memset(dst + i * width, 0, row_bytes);
      else std::memcpy(dst + i * width, src + static_cast<std::int64_t>(rows[i]) * width, row_bytes);
    }
  }

  void combine_rows(const float* src, std::int64_t width, std::int64_t n_out,
                    const std::int32_t* offsets, const std::int32_t* sources,
                    const float* weights, float* dst) override {
#pragma omp parallel for schedule(static)
    for (std::int64_t r = 0; r < n_out; ++r) {
      float* out = dst + r * width;
      const std::int32_t begin = offsets[r], end = offsets[r + 1];
      if (begin == end) {
        std::memset(out, 0, sizeof(float) * static_cast<std::size_t>(width));
        continue;
      }
      for (std::int32_t a = begin; a < end; ++a) {
        const float* in = src + static_cast<std::int64_t>(sources[a]) * width;
        const float w = weights ? weights[a] : 1.0f;
        if (a == begin) {
#pragma omp simd
          for (std::int64_t h = 0; h < width; ++h) out[h] = w * in[h];
        } else {
#pragma omp simd
          for (std::int64_t h = 0; h < width; ++h) out[h] += w * in[h];
        }
      }
    }
  }

  void scatter(const float* values, const std::int32_t* positions, std::int64_t n, float* dst) override {
    for (std::int64_t i = 0; i < n; ++i) dst[positions[i]] = values[i];
  }

  void column_sums_later(const float* m, std::int64_t rows, std::int64_t cols, double* host_sums) override {
    // Fixed chunks summed in chunk order: the same bits whatever the thread count.
    constexpr std::int64_t kChunk = 1024;
    const std::int64_t chunks = (rows + kChunk - 1) / kChunk;
    std::vector<double> partial(static_cast<std::size_t>(chunks * cols), 0.0);
#pragma omp parallel for schedule(static)
    for (std::int64_t chunk = 0; chunk < chunks; ++chunk) {
      double* sum = partial.data() + chunk * cols;
      const std::int64_t end = std::min(rows, (chunk + 1) * kChunk);
      for (std::int64_t r = chunk * kChunk; r < end; ++r)
        for (std::int64_t c = 0; c < cols; ++c) sum[c] += m[r * cols + c];
    }
    std::fill(host_sums, host_sums + cols, 0.0);
    for (std::int64_t chunk = 0; chunk < chunks; ++chunk)
      for (std::int64_t c = 0; c < cols; ++c) host_sums[c] += partial[static_cast<std::size_t>(chunk * cols + c)];
  }

  void combine_backward(const float* d_dst, const float* src, std::int64_t width, std::int64_t n_out,
                        const std::int32_t* offsets, const std::int32_t* sources, const float* weights,
                        float* d_src, float* d_weights) override {
#pragma omp parallel for schedule(static)
    for (std::int64_t r = 0; r < n_out; ++r) {
      const float* d_out = d_dst + r * width;
      for (std::int32_t a = offsets[r]; a < offsets[r + 1]; ++a) {
        const float* in = src + static_cast<std::int64_t>(sources[a]) * width;
        float* d_in = d_src + static_cast<std::int64_t>(sources[a]) * width;
        const float w = weights ? weights[a] : 1.0f;
        double dot = 0.0;
#pragma omp simd reduction(+ : dot)
        for (std::int64_t h = 0; h < width; ++h) {
          d_in[h] = w * d_out[h];
          dot += double(d_out[h]) * double(in[h]);
        }
        if (d_weights) d_weights[a] = static_cast<float>(dot);
      }
    }
  }

  void activation_backward(const float* z, const float* dh, std::int64_t n, Act act, float* dz) override {
    constexpr std::int64_t kRun = 4096;  // the vectorised loop, in runs of 4096 for the threads
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; i += kRun)
      cpu::activation_backward_run(act, z + i, dh + i, dz + i, std::min(kRun, n - i));
  }

  void add_column_sums(const float* m, std::int64_t rows, std::int64_t cols, float* sums) override {
    // Columns split across threads, rows summed in order: the same bits whatever the
    // thread count.
#pragma omp parallel for schedule(static)
    for (std::int64_t c0 = 0; c0 < cols; c0 += 64) {
      const std::int64_t c1 = std::min(cols, c0 + 64);
      double acc[64] = {};
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = c0; c < c1; ++c) acc[c - c0] += m[r * cols + c];
      for (std::int64_t c = c0; c < c1; ++c) sums[c] += static_cast<float>(acc[c - c0]);
    }
  }

  void router_backward(const float* logits, const float* probs, const std::int32_t* indices, const float* d_weights,
                       const float* lse, std::int64_t tokens, const RouterParams& params, const float* aux_grad,
                       float z_scale, float* d_logits) override {
    const int E = params.num_experts, k = params.top_k;
#pragma omp parallel for schedule(static)
    for (std::int64_t t = 0; t < tokens; ++t)
      router_backward_row(logits + t * E, probs + t * E, indices + t * k, d_weights + t * k, lse[t], params,
                          aux_grad, z_scale, d_logits + t * E);
  }

  void add(float* x, const float* y, std::int64_t n) override {
#pragma omp parallel for simd schedule(static)
    for (std::int64_t i = 0; i < n; ++i) x[i] += y[i];
  }

  void scale(float* x, std::int64_t n, float s) override {
#pragma omp parallel for simd schedule(static)
    for (std::int64_t i = 0; i < n; ++i) x[i] *= s;
  }

  double sum_squares(const float* x, std::int64_t n) override {
    // Fixed chunks summed in chunk order, as column_sums_later. Within a chunk, element
    // i goes to lane i mod 8 and the lanes are added as a fixed tree: the order depends
    // on n alone, so the bits do not change with the thread count, and the eight
    // independent sums vectorise where one chain of additions waited on each (29 ms
    // against 15 for 67M values on the 2-core build machine).
    constexpr std::int64_t kChunk = 1 << 16;
    constexpr std::int64_t kLanes = 8;
    const std::int64_t chunks = (n + kChunk - 1) / kChunk;
    std::vector<double> partial(static_cast<std::size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static)
    for (std::int64_t c = 0; c < chunks; ++c) {
      double lane[kLanes] = {};
      const std::int64_t end = std::min(n, (c + 1) * kChunk);
      std::int64_t i = c * kChunk;
      for (; i + kLanes <= end; i += kLanes)
        for (std::int64_t l = 0; l < kLanes; ++l) lane[l] += double(x[i + l]) * double(x[i + l]);
      for (std::int64_t l = 0; i < end; ++i, ++l) lane[l] += double(x[i]) * double(x[i]);
      partial[static_cast<std::size_t>(c)] =
          ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    }
    double total = 0.0;
    for (double p : partial) total += p;
    return total;
  }

  void sgd_update(float* param, const float* grad, float* momentum, std::int64_t n, float lr, float mu,
                  float weight_decay) override {
#pragma omp parallel for simd schedule(static)
    for (std::int64_t i = 0; i < n; ++i) sgd_element(param[i], grad[i], momentum[i], lr, mu, weight_decay);
  }

  void adamw_update(float* param, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1,
                    float beta2, float eps, float weight_decay, float correction1, float correction2) override {
#pragma omp parallel for simd schedule(static)
    for (std::int64_t i = 0; i < n; ++i)
      adamw_element(param[i], grad[i], m[i], v[i], lr, beta1, beta2, eps, weight_decay, correction1, correction2);
  }

 private:
  std::atomic<std::uint64_t> frees_{0};  // memory_epoch()
};

}  // namespace

std::unique_ptr<Ops> make_cpu_ops() { return std::make_unique<CpuOps>(); }

}  // namespace moe::kernels
