// The CUDA backend: device memory, one stream, cuBLAS for every matrix product and a
// kernel per element-wise or per-row op (each in its own .cu, sharing its per-element
// logic with the CPU through kernels/*.hpp and the .cuh headers).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/cuda_backend.hpp"
#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/environment.cuh"
#include "kernels/cuda/epilogue_gemm.cuh"
#include "kernels/cuda/expert_epilogue.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/graph_recorder.cuh"
#include "kernels/cuda/optimizer.cuh"
#include "kernels/cuda/plan.cuh"
#include "kernels/cuda/random.cuh"
#include "kernels/cuda/reductions.cuh"
#include "kernels/cuda/resident_gemm.cuh"
#include "kernels/cuda/router.cuh"
#include "kernels/cuda/rows.cuh"
#include "kernels/cuda/split_k.cuh"
#include "kernels/cuda/upload_ring.cuh"
#include "kernels/random_stream.hpp"

namespace moe::kernels::cuda {
namespace {

class CudaOps final : public Ops {
 public:
  CudaOps(int device, GemmPrecision precision, bool high_priority) : device_(device), precision_(precision) {
    const int gemm_lanes = gemm_lanes_from_environment();  // a bad value fails before anything is made
    const bool share_sms = gemm_sm_share_from_environment();
    const bool epilogue_in_gemm = gemm_epilogue_from_environment();
    split_k_ = gemm_split_k_from_environment();
    bias_sums_in_epilogue_ = bias_gradient_sums_in_epilogue_from_environment();
    hidden_by_element_ = hidden_epilogue_by_element_from_environment();
    plan_in_one_kernel_from_environment(plan_launch_);
    MOE_CHECK(Cuda, cudaSetDevice(device));
    MOE_CHECK(Cuda, cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device));
    // High priority (LayerOptions::high_priority): where other work shares the GPU, the
    // scheduler starts these streams' blocks first; the GEMM lanes take the same.
    int greatest = 0;
    MOE_CHECK(Cuda, cudaDeviceGetStreamPriorityRange(nullptr, &greatest));
    MOE_CHECK(Cuda, cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, high_priority ? greatest : 0));
    plan_launch_.stream = stream_, plan_launch_.multiprocessors = sms_;
    MOE_CHECK(Cuda, cudaEventCreateWithFlags(&downloaded_, cudaEventDisableTiming));
    MOE_CHECK(Cublas, cublasCreate(&blas_));
    MOE_CHECK(Cublas, cublasSetStream(blas_, stream_));
    lanes_ = std::make_unique<GemmLanes>(gemm_lanes, stream_, blas_, share_sms);
    if (epilogue_in_gemm && precision == GemmPrecision::BF16) {
      epilogue_ = std::make_unique<ReluEpilogueProducts>(*lanes_);
      // Probed here, where waiting for the GPU is safe: probed at a first forward, a CUDA
      // graph recorded before any eager forward had to keep the kernel (the probe cannot
      // wait inside a recording) while later eager forwards took the epilogue, with its
      // bias rounded to bf16: two paths for one layer.
      const bool usable = epilogue_->usable();
      const char* bias_type = epilogue_->bias_in_bf16() ? " (its bias rounded to bf16)" : " (its bias in float32)";
      std::fprintf(stderr, "moe: MOE_GEMM_EPILOGUE=1: %s\n",
                   usable ? (std::string("the experts' first product adds the bias and applies ReLU in cuBLASLt's "
                                         "epilogue") + bias_type).c_str()
                          : (epilogue_->why_not() + "; the hidden epilogue kernel runs instead").c_str());
    }
    uploads_ = std::make_unique<UploadRing>(stream_);
    recorder_ = std::make_unique<GraphRecorder>(stream_);
  }

  ~CudaOps() override {
    // Destructors never throw: failures are reported and the rest is still released.
    recorder_.reset();  // ends a recording left open
    if (stream_ && cudaStreamSynchronize(stream_) != cudaSuccess) std::fprintf(stderr, "moe: a stream failed\n");
    epilogue_.reset();  // before the lanes it launches on
    lanes_.reset();
    for (auto& w : weight_cache_) release(w.bf16);
    uploads_.reset();
    if (downloads_ && cudaFreeHost(downloads_) != cudaSuccess) std::fprintf(stderr, "moe: cudaFreeHost failed\n");
    for (cudaEvent_t event : marks_)
      if (cudaEventDestroy(event) != cudaSuccess) std::fprintf(stderr, "moe: cudaEventDestroy failed\n");
    if (downloaded_ && cudaEventDestroy(downloaded_) != cudaSuccess)
      std::fprintf(stderr, "moe: cudaEventDestroy failed\n");
    for (Scratch* s : {&table_, &doubles_, &partials_, &column_table_, &plan_, &x16_, &z16_, &h16_, &y16_, &a16_,
                       &b16_, &split_partials_, &resident_table_, &tile_starts_})
      release(s->ptr);
    if (blas_ && cublasDestroy(blas_) != CUBLAS_STATUS_SUCCESS) std::fprintf(stderr, "moe: cublasDestroy failed\n");
    if (stream_ && cudaStreamDestroy(stream_) != cudaSuccess) std::fprintf(stderr, "moe: cudaStreamDestroy failed\n");
  }

  Backend backend() const override { return Backend::CUDA; }
  int stream_priority() const override { return lanes_->priority(); }

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
      touched(ptr, it->second, /*freed=*/true);
      sizes_.erase(it);
    }
    release(ptr);
  }
  // Marks are events on the stream, created once and reused.
  std::size_t mark() override {
    if (marks_used_ == marks_.size()) {
      cudaEvent_t event = nullptr;
      MOE_CHECK(Cuda, cudaEventCreate(&event));
      marks_.push_back(event);
    }
    MOE_CHECK(Cuda, cudaEventRecord(marks_[marks_used_], stream_));
    return marks_used_++;
  }
  double seconds_between(std::size_t a, std::size_t b) override {
    MOE_CHECK(Cuda, cudaEventSynchronize(marks_.at(b)));
    float ms = 0.0f;
    MOE_CHECK(Cuda, cudaEventElapsedTime(&ms, marks_.at(a), marks_.at(b)));
    return static_cast<double>(ms) * 1e-3;
  }
  void release_marks(std::size_t first) noexcept override {
    if (first < marks_used_) marks_used_ = first;
  }

  void copy_to_host(void* host_dst, const void* src, std::size_t bytes) override {
    if (!bytes) return;
    not_while_recording("a copy to the host");
    MOE_CHECK(Cuda, cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    synchronize();
  }
  // Into pinned memory on the stream (a copy to pageable memory would wait); the bytes
  // move to host_dst when synchronize() has seen the stream finish.
  void copy_to_host_later(void* host_dst, const void* src, std::size_t bytes) override {
    if (!bytes) return;
    not_while_recording("a copy to the host");
    std::size_t at = (downloads_used_ + 15) / 16 * 16;
    if (at + bytes > downloads_capacity_) {
      synchronize();  // lands what is queued, and frees the staging memory for a larger one
      at = 0;
      if (bytes > downloads_capacity_) {
        if (downloads_ && cudaFreeHost(downloads_) != cudaSuccess) std::fprintf(stderr, "moe: cudaFreeHost failed\n");
        downloads_ = nullptr, downloads_capacity_ = 0;
        const std::size_t capacity = bytes < (std::size_t{1} << 20) ? std::size_t{1} << 20 : 2 * bytes;
        MOE_CHECK(Cuda, cudaMallocHost(&downloads_, capacity));
        downloads_capacity_ = capacity;
      }
    }
    char* staged = static_cast<char*>(downloads_) + at;
    MOE_CHECK(Cuda, cudaMemcpyAsync(staged, src, bytes, cudaMemcpyDeviceToHost, stream_));
    MOE_CHECK(Cuda, cudaEventRecord(downloaded_, stream_));  // wait_for_downloads waits for this
    pending_downloads_.push_back({host_dst, staged, bytes});
    downloads_used_ = at + bytes;
  }
  void wait_for_downloads() override {
    not_while_recording("a wait for the GPU");
    if (pending_downloads_.empty()) return;
    MOE_CHECK(Cuda, cudaEventSynchronize(downloaded_));
    land_downloads();
  }
  void copy_from_host(void* dst, const void* host_src, std::size_t bytes) override {
    if (!bytes) return;
    touched(dst, bytes);
    // The caller may reuse its host memory as soon as this returns: small copies are
    // staged in pinned memory and the host goes on; large ones wait for the copy. A
    // recording keeps its own copy of the bytes, for every replay.
    if (recorder_->recording()) return recorder_->upload(dst, host_src, bytes);
    if (bytes <= UploadRing::kMaxBytes) return uploads_->upload(dst, host_src, bytes);
    MOE_CHECK(Cuda, cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
    synchronize();
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
  void synchronize() override {
    not_while_recording("a wait for the GPU");
    MOE_CHECK(Cuda, cudaStreamSynchronize(stream_));
    land_downloads();
  }
  // The staged downloads into their host memory, once the stream has passed them.
  void land_downloads() {
    for (const PendingDownload& d : pending_downloads_) std::memcpy(d.host_dst, d.staged, d.bytes);
    pending_downloads_.clear();
    downloads_used_ = 0;
  }
  void written_elsewhere(const void* dst, std::size_t bytes) override { touched(dst, bytes); }

  void begin_capture() override {
    synchronize();  // lands the downloads queued before
    recorder_->begin();
  }
  std::unique_ptr<CapturedWork> end_capture() override { return recorder_->end(); }
  void abort_capture() noexcept override { recorder_->abort(); }
  void replay(CapturedWork& work) override {
    // bf16 copies made stale since the recording (an optimizer step) are converted
    // again into the same memory first, which the recording reads.
    for (auto& c : weight_cache_)
      if (c.stale) launch_to_bf16(c.source, static_cast<std::int64_t>(c.count), c.bf16, stream_), c.stale = false;
    recorder_->replay(work);
  }
  std::uint64_t memory_epoch() const override { return frees_; }

  void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
            std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) override {
    // BF16 applies to the expert GEMMs of the forward (linear); everything else is FP32
    // or, when asked, TF32.
    // Thin products (the router's) split over K (split_k.cuh; MOE_GEMM_SPLIT_K=0: not).
    const GemmPrecision p = precision_ == GemmPrecision::TF32 ? GemmPrecision::TF32 : GemmPrecision::FP32;
    const int slices = split_k_ ? split_k_slices(m, n, k, sms_) : 1;
    // The partials' scratch is sized once for any split, so a split never moves it.
    const std::size_t partial_bytes = sizeof(float) * static_cast<std::size_t>(split_k_partials_bound(sms_));
    float* partials = slices > 1 ? static_cast<float*>(grow(split_partials_, partial_bytes)) : nullptr;
    cuda::gemm_split_k(blas_, p, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, slices, partials);
  }

  void linear(const float* x, std::int64_t n, std::int64_t in_dim, const float* w, std::int64_t out_dim,
              const float* bias, Act act, float* pre_act, float* out) override {
    if (n == 0) return;
    float* target = pre_act ? pre_act : out;
    if (precision_ == GemmPrecision::BF16) {
      void* xb = grow(x16_, 2 * static_cast<std::size_t>(n * in_dim));
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
    const std::int64_t first = row_offsets.front(), total = row_offsets.back() - first;
    if (groups <= 0 || total == 0) return;
    float* pre = pre_act ? pre_act + first * out_dim : nullptr;
    if (precision_ == GemmPrecision::BF16) {
      // bf16 operands and a bf16 result; the bias and activation then write float32.
      void* y16 = grow(y16_, 2 * static_cast<std::size_t>(total * out_dim));
      const GroupTable t = group_table(
          row_offsets, {{to_bf16(x + first * in_dim, total * in_dim, x16_), in_dim, weight_operands(weights, in_dim * out_dim),
                         y16, out_dim, biases}}, 2);
      cuda::grouped_gemm(*lanes_, precision_, t.rows, static_cast<int>(out_dim), static_cast<int>(in_dim), t.operands(0));
      launch_expert_output(y16, t.biases(0), t.offsets, groups, total, out_dim, act, pre, out + first * out_dim,
                           stream_);
      return;
    }
    float* c = pre ? pre : out + first * out_dim;
    const GroupTable t = group_table(
        row_offsets, {{x + first * in_dim, in_dim, weight_operands(weights, in_dim * out_dim), c, out_dim, biases}}, 4);
    cuda::grouped_gemm(*lanes_, precision_, t.rows, static_cast<int>(out_dim), static_cast<int>(in_dim), t.operands(0));
    // The bias and activation over every group in one pass.
    launch_grouped_bias_activation(c, t.biases(0), t.offsets, groups, total * out_dim, out_dim, act, pre,
                                   out + first * out_dim, stream_);
  }

  // In bf16, every expert at once in bf16 from end to end: the rows converted once, two
  // grouped GEMMs on the cached bf16 weights with bf16 results, the bias, activation (or
  // glu product) and conversion for the second GEMM in one pass over every expert's rows,
  // and the output bias in one more. The float32 pre-activations and hidden are written
  // only for a backward. Other precisions: the default (grouped_linear, glu, grouped_linear).
  void expert_ffn(const ExpertBatch& batch, float* pre, float* hidden, float* out) override {
    if (precision_ != GemmPrecision::BF16) return Ops::expert_ffn(batch, pre, hidden, out);
    const std::int64_t first = batch.row_offsets.front(), rows = batch.row_offsets.back() - first;
    if (batch.row_offsets.size() < 2 || rows == 0) return;
    grow_rows(x16_, batch, rows, batch.in_dim);
    bf16_expert_ffn(batch, to_bf16(batch.x + first * batch.in_dim, rows * batch.in_dim, x16_), pre, hidden, out);
  }

  // In bf16 the gather writes the bf16 rows the first GEMM reads: one pass over the rows
  // where gather_rows and the conversion made two (about 250 and 190 µs at the fine
  // config on an H200, 2026-11-27). For a backward they are the kept rows, `gathered`.
  bool keeps_bf16() const override { return precision_ == GemmPrecision::BF16; }
  void gather_expert_ffn(const float* src, const std::int32_t* rows_of, float* gathered, const ExpertBatch& batch,
                         float* pre, float* hidden, float* out) override {
    if (precision_ != GemmPrecision::BF16) return Ops::gather_expert_ffn(src, rows_of, gathered, batch, pre, hidden, out);
    const std::int64_t H = batch.in_dim, first = batch.row_offsets.front(), rows = batch.row_offsets.back() - first;
    if (batch.row_offsets.size() < 2 || rows == 0) return;
    void* x16 = batch.keep_for_backward ? kept_bf16(gathered, first * H) : grow_rows(x16_, batch, rows, H);
    launch_gather_rows_bf16(src, rows_of + first, rows, H, nullptr, x16, stream_);
    ExpertBatch on_gathered = batch;
    on_gathered.x = gathered;
    bf16_expert_ffn(on_gathered, x16, pre, hidden, out);
  }

  // In bf16 the output bias is added as the bf16 products are combined: one pass where
  // the output epilogue (writing the float32 expert output) and the combine (reading
  // it) were two, about 260 and 140 µs per fine forward on an H200 (2026-11-27). For a
  // backward the bf16 products are kept in `out` (kernels/ops.hpp), and
  // expert_combine_backward adds the bias as it reads them.
  bool expert_scratch_for_inference() const override { return precision_ != GemmPrecision::BF16; }
  void gather_expert_ffn_combine(const float* src, const std::int32_t* rows_of, float* gathered,
                                 const ExpertBatch& batch, float* pre, float* hidden, float* out,
                                 const CombineInto& into) override {
    const std::int64_t H = batch.in_dim, first = batch.row_offsets.front(), rows = batch.row_offsets.back() - first;
    if (precision_ != GemmPrecision::BF16 || batch.row_offsets.size() < 2 || rows == 0)
      return Ops::gather_expert_ffn_combine(src, rows_of, gathered, batch, pre, hidden, out, into);
    const bool keep = batch.keep_for_backward;
    void* x16 = keep ? kept_bf16(gathered, first * H) : grow_rows(x16_, batch, rows, H);
    launch_gather_rows_bf16(src, rows_of + first, rows, H, nullptr, x16, stream_);
    ExpertBatch on_gathered = batch;
    on_gathered.x = gathered;
    void* y16 = keep ? kept_bf16(out, first * H) : grow_rows(y16_, batch, rows, H);
    const GroupTable t = bf16_expert_products(on_gathered, x16, pre, hidden, y16);
    launch_combine_expert_output(y16, t.biases(1), t.offsets, static_cast<int>(batch.row_offsets.size()) - 1, first,
                                 H, into.n_out, into.offsets, into.sources, into.weights, into.rows_out, stream_);
  }

  // In bf16 with widths the resident products take: nothing waits for the routing. The
  // rows are gathered into bf16, the two products run over tiles the device's offsets
  // say are theirs (resident_gemm.cuh), and the hidden epilogue and the combine with
  // its output bias read the same offsets, as they do a host table's. One upload holds
  // the groups' bf16 weights and biases (recorded with its bytes in a CUDA graph), in
  // memory of its own: the host-offset path's larger tables would otherwise move it
  // and so end a graph's validity.
  bool groups_resident(const ExpertBatch& batch) const override {
    const std::int64_t GF = batch.gated ? 2 * batch.width : batch.width;
    return precision_ == GemmPrecision::BF16 && resident_gemm_fits(GF, batch.in_dim) &&
           resident_gemm_fits(batch.in_dim, batch.width);
  }
  void gather_expert_ffn_combine_resident(const float* src, const std::int32_t* rows_of, std::int64_t rows,
                                          const std::int64_t* offsets, float* gathered, const ExpertBatch& batch,
                                          float* pre, float* hidden, float* out, const CombineInto& into) override {
    if (!groups_resident(batch) || batch.keep_for_backward)
      return Ops::gather_expert_ffn_combine_resident(src, rows_of, rows, offsets, gathered, batch, pre, hidden, out,
                                                     into);
    const std::int64_t H = batch.in_dim, F = batch.width, GF = batch.gated ? 2 * F : F;
    const std::size_t groups = batch.w_in.size();
    if (rows == 0 || groups == 0) return;
    void* x16 = grow_rows(x16_, batch, rows, H);
    void* z16 = grow_rows(z16_, batch, rows, GF);
    void* h16 = grow_rows(h16_, batch, rows, F);
    void* y16 = grow_rows(y16_, batch, rows, H);
    // The table: each group's W_in, W_out (bf16), b_in, b_out.
    std::vector<const void*> table;
    const auto in_count = static_cast<std::size_t>(H * GF), out_count = static_cast<std::size_t>(F * H);
    for (std::size_t g = 0; g < groups; ++g) table.push_back(bf16_weights(batch.w_in[g], in_count));
    for (std::size_t g = 0; g < groups; ++g) table.push_back(bf16_weights(batch.w_out[g], out_count));
    table.insert(table.end(), batch.b_in.begin(), batch.b_in.end());
    table.insert(table.end(), batch.b_out.begin(), batch.b_out.end());
    const auto* device = static_cast<const void* const*>(upload(resident_table_, table));
    const auto biases = [&](std::size_t part) { return reinterpret_cast<const float* const*>(device + part * groups); };
    const int G = static_cast<int>(groups);
    auto* starts = static_cast<std::int64_t*>(grow(tile_starts_, sizeof(std::int64_t) * (groups + 1)));
    launch_resident_tile_starts(offsets, G, starts, stream_);
    launch_gather_rows_bf16(src, rows_of, rows, H, nullptr, x16, stream_);
    // K split where the tiles leave the GPU idle (a decoding step's rows), its partial
    // sums in the split-K scratch: sized once for any split, so a graph's never moves.
    const std::int64_t bound = split_k_partials_bound(sms_);
    const int slices_in = resident_k_slices(rows, static_cast<int>(GF), static_cast<int>(H), sms_, bound);
    const int slices_out = resident_k_slices(rows, static_cast<int>(H), static_cast<int>(F), sms_, bound);
    float* partials = slices_in > 1 || slices_out > 1
                          ? static_cast<float*>(grow(split_partials_, sizeof(float) * static_cast<std::size_t>(bound)))
                          : nullptr;
    launch_resident_grouped_gemm(x16, device, z16, offsets, starts, G, rows, static_cast<int>(GF), static_cast<int>(H),
                                 slices_in, partials, stream_);
    launch_expert_hidden(z16, biases(2), offsets, G, rows, F, batch.gated, batch.act, nullptr, h16, stream_,
                         hidden_by_element_);
    launch_resident_grouped_gemm(h16, device + groups, y16, offsets, starts, G, rows, static_cast<int>(H),
                                 static_cast<int>(F), slices_out, partials, stream_);
    launch_combine_expert_output(y16, biases(3), offsets, G, 0, H, into.n_out, into.offsets, into.sources,
                                 into.weights, into.rows_out, stream_);
  }

  void expert_combine_backward(const ExpertBatch& batch, const float* out, const float* d_dst,
                               const CombineInto& combine, float* d_src, float* d_weights) override {
    if (precision_ != GemmPrecision::BF16) return Ops::expert_combine_backward(batch, out, d_dst, combine, d_src, d_weights);
    const std::int64_t first = batch.row_offsets.front();
    const BiasTable t = bias_table(batch.row_offsets, batch.b_out);
    launch_combine_expert_output_backward(kept_bf16(out, first * batch.in_dim), t.biases, t.offsets, t.groups, first,
                                          batch.in_dim, combine.n_out, combine.offsets, combine.sources,
                                          combine.weights, d_dst, d_src, d_weights, stream_);
  }

  // Every group's backward at once, in every precision: the element-wise work and the
  // bias gradients' sums one pass each over every group's rows, and each group's
  // products on a GEMM lane, as the forward's per-group products run (the lanes give
  // the same bits as one stream). In bf16 the operands are bf16: the forward's kept rows
  // (the input rows, the hidden, the pre-activations) as they are, ∂L/∂y converted once
  // for every group, and ∂L/∂z written in bf16 by the activation's backward, which
  // also gives the input biases' gradients. Before, each group ran its own products
  // one after another on one stream (float32, TF32), and in bf16 converted ∂L/∂y and
  // ∂L/∂z twice each, with a conversion and an element-wise launch per group.
  void expert_ffn_backward(const ExpertBatch& batch, const float* pre, const float* hidden, float* dy,
                           const ExpertBatchGradients& grads, float* d_hidden, float* d_pre, float* dx) override {
    const std::int64_t H = batch.in_dim, F = batch.width, GF = batch.gated ? 2 * F : F;
    const std::size_t groups = batch.row_offsets.size() - 1;
    const std::int64_t first = batch.row_offsets.front(), rows = batch.row_offsets.back() - first;
    if (batch.row_offsets.size() < 2 || rows == 0) return;
    const bool bf16 = precision_ == GemmPrecision::BF16;
    auto each_group = [&](auto&& fn) {  // fn(group, its first row relative to `first`, its rows)
      for (std::size_t g = 0; g < groups; ++g) {
        const std::int64_t n = batch.row_offsets[g + 1] - batch.row_offsets[g];
        if (n > 0) fn(g, batch.row_offsets[g] - first, n);
      }
    };
    // Each group's products on the GEMM lanes, groups side by side as in the forward:
    // fn(handle, group, first row relative to `first`, rows).
    auto on_lanes = [&](auto&& fn) {
      int nonempty = 0;
      each_group([&](std::size_t, std::int64_t, std::int64_t) { ++nonempty; });
      const int used = std::min(lanes_->count(), nonempty);
      if (used > 1) lanes_->fork();
      int i = 0;
      each_group([&](std::size_t g, std::int64_t at, std::int64_t n) {
        fn(used > 1 ? lanes_->handle(i++ % used) : lanes_->main_handle(), g, at, n);
      });
      if (used > 1) lanes_->join();
    };
    // Row `row` (from `first`) of an operand `width` wide, in the products' element type.
    auto row_of = [bf16](const void* operand, std::int64_t row, std::int64_t width) {
      return static_cast<const char*>(operand) + row * width * (bf16 ? 2 : 4);
    };
    auto product = [&](cublasHandle_t handle, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n,
                       std::int64_t k, const void* a, std::int64_t lda, const void* b, std::int64_t ldb, float beta,
                       float* c, std::int64_t ldc) {
      cuda::gemm(handle, precision_, trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
    };
    // The weights as operands: in bf16 their copies, made (or refreshed) on the main
    // stream before the lanes fork from it.
    std::vector<const void*> w_out(batch.w_out.begin(), batch.w_out.end()), w_in(batch.w_in.begin(), batch.w_in.end());
    if (bf16)
      for (std::size_t g = 0; g < groups; ++g) {
        w_out[g] = bf16_weights(batch.w_out[g], static_cast<std::size_t>(F * H));
        w_in[g] = bf16_weights(batch.w_in[g], static_cast<std::size_t>(H * GF));
      }
    // y = hidden·W_out + b_out: the output bias, then both products from ∂L/∂y.
    add_batch_column_sums(batch, dy, H, grads.b_out);
    // ∂L/∂y in bf16, then ∂L/∂z over it: their scratch for the most rows at once.
    if (bf16) grow_rows(a16_, batch, rows, std::max(H, GF));
    const void* dy_rows = bf16 ? to_bf16(dy + first * H, rows * H, a16_) : static_cast<const void*>(dy + first * H);
    const void* hidden_rows = bf16 ? static_cast<const void*>(kept_bf16(hidden, first * F)) : hidden + first * F;
    on_lanes([&](cublasHandle_t handle, std::size_t g, std::int64_t at, std::int64_t n) {
      product(handle, true, false, F, H, n, row_of(hidden_rows, at, F), F, row_of(dy_rows, at, H), H, 1.0f,
              grads.w_out[g], H);
      product(handle, false, true, n, F, H, row_of(dy_rows, at, H), H, w_out[g], H, 0.0f, d_hidden + (first + at) * F,
              F);
    });
    // hidden = act(pre) (ffn) or act(gate) ⊙ up (glu), over every row at once, then the
    // input biases' gradients. In bf16: ∂L/∂z in bf16 into the scratch of ∂L/∂y (the
    // stream runs the products above before anything written here), its sums taken
    // from it as Megatron-Core's bf16 training sums its bias gradients; no float32 ∂L/∂z
    // (d_pre is null: needs_pre_gradient_scratch). Else in float32 over d_hidden (ffn) or
    // into d_pre (glu).
    const void* dz_rows = nullptr;
    if (bf16) {
      void* dz16 = grow(a16_, 2 * static_cast<std::size_t>(rows * GF));
      const ColumnTable sums_in = column_table(batch.row_offsets, first, GF, grads.b_in, batch.rows_bound);
      // In one pass where the table's chunks cover every row (every group has a bias).
      const bool every_group_summed =
          std::all_of(grads.b_in.begin(), grads.b_in.end(), [](const float* s) { return s != nullptr; });
      if (bias_sums_in_epilogue_ && every_group_summed && sums_in.chunks > 0) {
        launch_expert_hidden_backward_with_sums(kept_bf16(pre, first * GF), d_hidden + first * F, rows, F,
                                                batch.gated, batch.act, dz16, sums_in.chunk_rows, sums_in.chunks,
                                                sums_in.group_chunks, sums_in.sums, sums_in.groups, sums_in.partials,
                                                stream_);
      } else {
        launch_expert_hidden_backward(kept_bf16(pre, first * GF), d_hidden + first * F, rows, F, batch.gated,
                                      batch.act, dz16, stream_);
        if (sums_in.chunks > 0)
          launch_add_grouped_column_sums_bf16(dz16, GF, sums_in.chunk_rows, sums_in.chunks, sums_in.group_chunks,
                                              sums_in.sums, sums_in.groups, sums_in.partials, stream_);
      }
      dz_rows = dz16;
    } else {
      float* dz = batch.gated ? d_pre : d_hidden;
      if (batch.gated)
        launch_glu_backward(pre + first * GF, d_hidden + first * F, rows, F, batch.act, d_pre + first * GF, stream_);
      else
        launch_activation_backward(pre + first * F, d_hidden + first * F, rows * F, batch.act, d_hidden + first * F,
                                   stream_);
      add_batch_column_sums(batch, dz, GF, grads.b_in);
      dz_rows = dz + first * GF;
    }
    // pre = x·W_in + b_in.
    const void* x_rows = !bf16         ? static_cast<const void*>(batch.x + first * H)
                         : batch.x_kept ? static_cast<const void*>(kept_bf16(batch.x, first * H))
                                        : to_bf16(batch.x + first * H, rows * H, b16_);
    on_lanes([&](cublasHandle_t handle, std::size_t g, std::int64_t at, std::int64_t n) {
      product(handle, true, false, H, GF, n, row_of(x_rows, at, H), H, row_of(dz_rows, at, GF), GF, 1.0f,
              grads.w_in[g], GF);
      // ∂L/∂x, which may be written over ∂L/∂y: every product that reads ∂L/∂y ran
      // above (on the lanes, joined), and in bf16 it was converted.
      product(handle, false, true, n, H, GF, row_of(dz_rows, at, GF), GF, w_in[g], GF, 0.0f, dx + (first + at) * H, H);
    });
  }

  // In bf16 the experts' backward products take bf16 operands (cached weights, or a
  // conversion) with float32 results and accumulation: mixed-precision training.
  void expert_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                   const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                   std::int64_t ldc) override {
    if (precision_ != GemmPrecision::BF16) return gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    if (m == 0 || n == 0) return;
    // The extent of a row-major operand stored as rows × cols with leading dimension ld.
    auto extent = [](std::int64_t rows, std::int64_t cols, std::int64_t ld) { return (rows - 1) * ld + cols; };
    const void* a16 = bf16_operand(a, extent(trans_a ? k : m, trans_a ? m : k, lda), a16_);
    const void* b16 = bf16_operand(b, extent(trans_b ? n : k, trans_b ? k : n, ldb), b16_);
    cuda::gemm(blas_, GemmPrecision::BF16, trans_a, trans_b, m, n, k, alpha, a16, lda, b16, ldb, beta, c, ldc);
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

  void scatter(const float* values, const std::int32_t* positions, std::int64_t n, float* dst) override {
    launch_scatter(values, positions, n, dst, stream_);
  }

  // The plan's steps as kernels on the stream (plan.cu); only the E kept counts come
  // back, with the next wait.
  bool plans_where_routed() const override { return true; }
  void plan_single_rank(const std::int32_t* indices, const float* weights, std::int64_t tokens, std::int64_t top_k,
                        std::int64_t experts, std::int64_t capacity, std::int64_t rows_per_expert,
                        plan::Padding padding,
                        const SingleRankPlan& out) override {
    const std::int64_t n = tokens * top_k, chunks = plan::chunk_count(n), keyed = experts * chunks;
    Carving carve;
    const std::size_t slot_major = carve(4 * n), counts = carve(4 * keyed), bases = carve(4 * keyed),
                      group_bases = carve(4 * keyed), entry_bases = carve(4 * chunks), row_of = carve(4 * n), kept = carve(n),
                      offsets = carve(8 * (experts + 1)), entries = carve(8), kept_per_expert = carve(8 * experts);
    char* base = static_cast<char*>(grow(plan_, carve.used));
    plan::PlanArrays p{indices, weights, tokens, top_k, experts, capacity, rows_per_expert,
                       reinterpret_cast<std::int32_t*>(base + slot_major),
                       reinterpret_cast<std::int32_t*>(base + counts),
                       reinterpret_cast<std::int32_t*>(base + bases),
                       reinterpret_cast<std::int32_t*>(base + group_bases),
                       reinterpret_cast<std::int32_t*>(base + entry_bases),
                       reinterpret_cast<std::uint8_t*>(base + kept),
                       reinterpret_cast<std::int32_t*>(base + row_of),
                       out.expert_offsets ? out.expert_offsets : reinterpret_cast<std::int64_t*>(base + offsets),
                       reinterpret_cast<std::int64_t*>(base + entries),
                       reinterpret_cast<std::int64_t*>(base + kept_per_expert),
                       out.grouped_tokens, out.combine_offsets, out.combine_sources, out.combine_weights,
                       out.entry_slot};
    p.padding = padding;
    launch_single_rank_plan(p, plan_launch_);
    if (out.host_kept_per_expert)
      copy_to_host_later(out.host_kept_per_expert, p.kept_per_expert, sizeof(std::int64_t) * static_cast<std::size_t>(experts));
  }

  // The distributed plan's halves as kernels (plan.cu); only the counts come back, with
  // the next wait.
  void plan_send(const std::int32_t* indices, const float* weights, std::int64_t tokens, std::int64_t top_k,
                 std::int64_t experts, std::int64_t capacity, int ranks, int own_rank, bool deduplicate,
                 const SendPlan& out) override {
    const std::int64_t n = tokens * top_k, chunks = plan::chunk_count(n), keyed = experts * chunks,
                       by_rank = ranks * chunks;
    Carving carve;
    const std::size_t slot_major = carve(4 * n), counts = carve(4 * keyed), bases = carve(4 * keyed),
                      group_bases = carve(4 * keyed), kept = carve(n), kept_per_expert = carve(8 * experts),
                      row_keys = carve(4 * n), record_keys = carve(4 * n), row_bases = carve(4 * by_rank),
                      record_bases = carve(4 * by_rank), start_bases = carve(4 * chunks), rows_begin = carve(8 * ranks),
                      records_begin = carve(8 * ranks), total_rows = carve(8), rows_per_rank = carve(8 * ranks),
                      assignments_per_rank = carve(8 * ranks);
    char* base = static_cast<char*>(grow(plan_, carve.used));
    auto at = [&](std::size_t offset) { return static_cast<void*>(base + offset); };
    plan::PlanArrays admission{};
    admission.indices = indices, admission.weights = weights;
    admission.tokens = tokens, admission.top_k = top_k, admission.experts = experts, admission.capacity = capacity;
    admission.slot_major_experts = static_cast<std::int32_t*>(at(slot_major));
    admission.counts = static_cast<std::int32_t*>(at(counts));
    admission.bases = static_cast<std::int32_t*>(at(bases));
    admission.group_bases = static_cast<std::int32_t*>(at(group_bases));
    admission.kept = static_cast<std::uint8_t*>(at(kept));
    admission.kept_per_expert = static_cast<std::int64_t*>(at(kept_per_expert));
    const plan::SendPlanArrays s{admission, ranks, own_rank, deduplicate,
                                 static_cast<std::int32_t*>(at(row_keys)), static_cast<std::int32_t*>(at(record_keys)),
                                 static_cast<std::int32_t*>(at(row_bases)), static_cast<std::int32_t*>(at(record_bases)),
                                 static_cast<std::int32_t*>(at(start_bases)), static_cast<std::int64_t*>(at(rows_begin)),
                                 static_cast<std::int64_t*>(at(records_begin)), static_cast<std::int64_t*>(at(total_rows)),
                                 static_cast<std::int64_t*>(at(rows_per_rank)),
                                 static_cast<std::int64_t*>(at(assignments_per_rank)), out.row_token, out.records,
                                 out.assignment_slot, out.token_offsets, out.token_rows};
    launch_send_plan(s, plan_launch_);
    const std::size_t per_rank = sizeof(std::int64_t) * static_cast<std::size_t>(ranks);
    copy_to_host_later(out.host_rows_per_rank, s.rows_per_rank, per_rank);
    copy_to_host_later(out.host_assignments_per_rank, s.assignments_per_rank, per_rank);
    copy_to_host_later(out.host_kept_per_expert, admission.kept_per_expert,
                       sizeof(std::int64_t) * static_cast<std::size_t>(experts));
  }

  void plan_received(const plan::AssignmentRecord* records, std::int64_t count, std::int64_t rows,
                     std::int64_t local_experts, const ReceivedPlan& out) override {
    const std::int64_t chunks = plan::chunk_count(count), keyed = local_experts * chunks;
    Carving carve;
    const std::size_t counts = carve(4 * keyed), start_bases = carve(4 * chunks), group_bases = carve(4 * keyed),
                      kept_per_expert = carve(8 * local_experts), offsets = carve(8 * (local_experts + 1)),
                      starts = carve(8);
    char* base = static_cast<char*>(grow(plan_, carve.used));
    launch_receive_plan(plan::ReceivePlanArrays{records, count, rows, local_experts,
                                                reinterpret_cast<std::int32_t*>(base + counts),
                                                reinterpret_cast<std::int32_t*>(base + start_bases),
                                                reinterpret_cast<std::int32_t*>(base + group_bases),
                                                reinterpret_cast<std::int64_t*>(base + kept_per_expert),
                                                reinterpret_cast<std::int64_t*>(base + offsets),
                                                reinterpret_cast<std::int64_t*>(base + starts), out.grouped_rows,
                                                out.combine_offsets, out.combine_sources, out.combine_weights},
                        plan_launch_);
  }

  void column_sums_later(const float* m, std::int64_t rows, std::int64_t cols, double* host_sums) override {
    auto* sums = static_cast<double*>(grow(doubles_, sizeof(double) * static_cast<std::size_t>(cols)));
    launch_column_sums(m, rows, cols, partials(rows, cols), sums, stream_);
    copy_to_host_later(host_sums, sums, sizeof(double) * static_cast<std::size_t>(cols));
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
    launch_add_column_sums(m, rows, cols, partials(rows, cols), sums, stream_);
  }

  // Every group's chunks in one launch and their sums in another, from one uploaded
  // table: each chunk's rows, each group's chunks and its sums.
  void add_grouped_column_sums(const float* m, const std::vector<std::int64_t>& row_offsets, std::int64_t cols,
                               const std::vector<float*>& sums) override {
    add_column_sums(m, row_offsets, cols, sums, 0);
  }
  // add_grouped_column_sums over a batch's rows, its tables sized for its row bound.
  void add_batch_column_sums(const ExpertBatch& batch, const float* m, std::int64_t cols,
                             const std::vector<float*>& sums) {
    add_column_sums(m, batch.row_offsets, cols, sums, batch.rows_bound);
  }
  void add_column_sums(const float* m, const std::vector<std::int64_t>& row_offsets, std::int64_t cols,
                       const std::vector<float*>& sums, std::int64_t rows_bound) {
    const ColumnTable t = column_table(row_offsets, 0, cols, sums, rows_bound);
    if (t.chunks > 0)
      launch_add_grouped_column_sums(m, cols, t.chunk_rows, t.chunks, t.group_chunks, t.sums, t.groups, t.partials,
                                     stream_);
  }

  void router_backward(const float* logits, const float* probs, const std::int32_t* indices, const float* d_weights,
                       const float* lse, std::int64_t tokens, const RouterParams& params, const float* aux_grad,
                       float z_scale, float* d_logits) override {
    launch_router_backward(logits, probs, indices, d_weights, lse, tokens, params, aux_grad, z_scale, d_logits,
                           stream_);
  }

  void fill_normal(float* out, std::int64_t count, std::uint64_t seed, std::uint64_t stream) override {
    touched(out, sizeof(float) * static_cast<std::size_t>(count));
    launch_fill_normal(out, count, stream_start(seed, stream), stream_);
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
    auto* block_sums = static_cast<double*>(grow(doubles_, sizeof(double) * static_cast<std::size_t>(blocks)));
    launch_sum_squares(x, n, block_sums, stream_);
    std::vector<double> host(static_cast<std::size_t>(blocks));
    copy_to_host(host.data(), block_sums, sizeof(double) * host.size());
    double total = 0.0;
    for (double p : host) total += p;  // in block order: the same bits every time
    return total;
  }
  // Every array's block partials into one scratch, one download, then each array's
  // partials summed in block order as sum_squares does.
  void sum_squares_each(const std::vector<const float*>& x, const std::vector<std::int64_t>& n,
                        double* sums) override {
    std::vector<std::size_t> first(x.size() + 1, 0);
    for (std::size_t i = 0; i < x.size(); ++i) first[i + 1] = first[i] + static_cast<std::size_t>(sum_squares_blocks(n[i]));
    if (first.back() == 0) {
      for (std::size_t i = 0; i < x.size(); ++i) sums[i] = 0.0;
      return;
    }
    auto* block_sums = static_cast<double*>(grow(doubles_, sizeof(double) * first.back()));
    for (std::size_t i = 0; i < x.size(); ++i)
      if (first[i + 1] > first[i]) launch_sum_squares(x[i], n[i], block_sums + first[i], stream_);
    std::vector<double> host(first.back());
    copy_to_host(host.data(), block_sums, sizeof(double) * host.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      double total = 0.0;
      for (std::size_t b = first[i]; b < first[i + 1]; ++b) total += host[b];
      sums[i] = total;
    }
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
  // op that writes memory reports it through touched(), which marks overlapping copies
  // stale; the next use converts again into the same memory (a training job changes its
  // weights every step: no cudaFree and cudaMalloc, which wait for the GPU, per step).
  // Memory freed drops its copies.
  struct CachedWeights {
    const float* source;
    std::size_t count;
    void* bf16;
    bool stale;
  };

  void* bf16_weights(const float* w, std::size_t count) {
    for (auto& c : weight_cache_)
      if (c.source == w && c.count == count) {
        if (c.stale) launch_to_bf16(w, static_cast<std::int64_t>(count), c.bf16, stream_), c.stale = false;
        return c.bf16;
      }
    void* copy = allocate(count * 2);
    launch_to_bf16(w, static_cast<std::int64_t>(count), copy, stream_);
    weight_cache_.push_back({w, count, copy, false});
    return copy;
  }

  struct GroupTable;  // a grouped launch's operand table (below)

  // Each group's bias (null: none) and the row offsets from the first row, on the
  // device, for a pass over grouped rows that adds their biases (uploaded into the
  // grouped launches' table memory: the stream orders its uses).
  struct BiasTable {
    const float* const* biases;
    const std::int64_t* offsets;
    int groups;
  };
  BiasTable bias_table(const std::vector<std::int64_t>& row_offsets, const std::vector<const float*>& biases) {
    const std::size_t groups = row_offsets.size() - 1;
    std::vector<std::int64_t> table(2 * groups + 1);
    for (std::size_t g = 0; g < groups; ++g) table[g] = static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(biases[g]));
    for (std::size_t g = 0; g <= groups; ++g) table[groups + g] = row_offsets[g] - row_offsets.front();
    const auto* device = static_cast<const std::int64_t*>(upload(table_, table));
    return {reinterpret_cast<const float* const*>(device), device + groups, static_cast<int>(groups)};
  }

  // add_grouped_column_sums' table on the device: the chunks of kColumnChunkRows from
  // each group's first row (rows counted from first_row, where m starts), each group's
  // chunks and its sums; and the partials' scratch. chunks = 0: nothing to sum.
  struct ColumnTable {
    std::int64_t chunks = 0;
    const std::int64_t* chunk_rows = nullptr;
    const std::int64_t* group_chunks = nullptr;
    float* const* sums = nullptr;
    int groups = 0;
    double* partials = nullptr;
  };
  // With rows_bound (ExpertBatch::rows_bound), the table and the partials get room for
  // the most chunks that many rows can make, Σ_g ⌈rows_g / C⌉ ≤ ⌊rows / C⌋ + groups,
  // so that they move with the token count only.
  ColumnTable column_table(const std::vector<std::int64_t>& row_offsets, std::int64_t first_row, std::int64_t cols,
                           const std::vector<float*>& sums, std::int64_t rows_bound = 0) {
    ColumnTable t;
    if (row_offsets.size() < 2 || cols == 0) return t;
    const std::size_t groups = row_offsets.size() - 1;
    if (rows_bound > 0) {
      const auto most = static_cast<std::size_t>(rows_bound / kColumnChunkRows) + groups;
      grow(column_table_, sizeof(std::int64_t) * (2 * most + 2 * groups + 1));
      grow(partials_, sizeof(double) * most * static_cast<std::size_t>(cols));
    }
    std::vector<std::int64_t> chunk_rows, group_chunks = {0};
    for (std::size_t g = 0; g < groups; ++g) {
      if (sums[g])
        for (std::int64_t begin = row_offsets[g]; begin < row_offsets[g + 1]; begin += kColumnChunkRows)
          chunk_rows.push_back(begin - first_row),
              chunk_rows.push_back(std::min(begin + kColumnChunkRows, row_offsets[g + 1]) - first_row);
      group_chunks.push_back(static_cast<std::int64_t>(chunk_rows.size() / 2));
    }
    t.chunks = group_chunks.back();
    if (t.chunks == 0) return t;
    // One upload: the chunks' rows, the groups' chunks, the groups' sums.
    std::vector<std::int64_t> table = chunk_rows;
    table.insert(table.end(), group_chunks.begin(), group_chunks.end());
    for (float* p : sums) table.push_back(static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(p)));
    const auto* device_table = static_cast<const std::int64_t*>(upload(column_table_, table));
    t.partials = static_cast<double*>(grow(partials_, sizeof(double) * static_cast<std::size_t>(t.chunks * cols)));
    t.chunk_rows = device_table;
    t.group_chunks = device_table + chunk_rows.size();
    t.sums = reinterpret_cast<float* const*>(device_table + chunk_rows.size() + groups + 1);
    t.groups = static_cast<int>(groups);
    return t;
  }

  // expert_ffn in bf16 on the batch's rows already in bf16 (x16: rows [first, last) of
  // the batch, from its first row).
  void bf16_expert_ffn(const ExpertBatch& batch, void* x16, float* pre, float* hidden, float* out) {
    const int groups = static_cast<int>(batch.row_offsets.size()) - 1;
    const std::int64_t first = batch.row_offsets.front(), rows = batch.row_offsets.back() - first;
    void* y16 = grow_rows(y16_, batch, rows, batch.in_dim);
    const GroupTable t = bf16_expert_products(batch, x16, pre, hidden, y16);
    launch_expert_output(y16, t.biases(1), t.offsets, groups, rows, batch.in_dim, Act::Identity, nullptr,
                         out + first * batch.in_dim, stream_);
  }

  // The experts' two products on bf16 rows x16, and the hidden epilogue between them:
  // the second product's bf16 result in y16 (rows × in_dim), without its bias; the
  // table, whose stage 1 holds the output biases. For a backward the hidden and the
  // pre-activations are kept in bf16 (kernels/ops.hpp).
  GroupTable bf16_expert_products(const ExpertBatch& batch, void* x16, float* pre, float* hidden, void* y16) {
    const std::int64_t H = batch.in_dim, F = batch.width, GF = batch.gated ? 2 * F : F;
    const int groups = static_cast<int>(batch.row_offsets.size()) - 1;
    const std::int64_t first = batch.row_offsets.front(), rows = batch.row_offsets.back() - first;
    const bool keep = batch.keep_for_backward;
    void* z16 = grow_rows(z16_, batch, rows, GF);
    void* h16 = keep ? kept_bf16(hidden, first * F) : grow_rows(h16_, batch, rows, F);
    const GroupTable t = group_table(
        batch.row_offsets,
        {{x16, H, weight_operands(batch.w_in, H * GF), z16, GF, batch.b_in},
         {h16, F, weight_operands(batch.w_out, F * H), y16, H, batch.b_out}},
        2);
    if (relu_in_first_product(batch)) {
      // The hidden straight from the first product's epilogue: h16's rows are the second
      // product's A operands. A bf16 bias is the bias's cached bf16 copy, as a weight's.
      std::vector<const void*> b_in;
      for (std::size_t g = 0; g + 1 < batch.row_offsets.size(); ++g) {
        if (batch.row_offsets[g + 1] == batch.row_offsets[g]) continue;
        const float* bias = batch.b_in[g];
        b_in.push_back(bias && epilogue_->bias_in_bf16() ? bf16_weights(bias, static_cast<std::size_t>(F)) : bias);
      }
      const GroupedOperands in = t.operands(0), out = t.operands(1);
      epilogue_->run(t.rows, static_cast<int>(F), static_cast<int>(H), in.a_host, in.b_host,
                     const_cast<void* const*>(out.a_host), b_in.data());
    } else {
      cuda::grouped_gemm(*lanes_, precision_, t.rows, static_cast<int>(GF), static_cast<int>(H), t.operands(0));
      launch_expert_hidden(z16, t.biases(0), t.offsets, groups, rows, F, batch.gated, batch.act,
                           keep && pre ? kept_bf16(pre, first * GF) : nullptr, h16, stream_, hidden_by_element_);
    }
    cuda::grouped_gemm(*lanes_, precision_, t.rows, static_cast<int>(H), static_cast<int>(F), t.operands(1));
    return t;
  }

  // Whether the first product of this batch takes its bias and ReLU in cuBLASLt's
  // epilogue (MOE_GEMM_EPILOGUE=1; epilogue_gemm.cuh): an inference forward of ffn
  // experts with ReLU, where the probe (run when the ops were made, its answer printed
  // then with its reason) passed. Widths that are multiples of 8 keep every expert's
  // rows and biases 16-byte aligned, which cuBLASLt's kernels want of a bias (its
  // heuristic is told the rows' alignment, not the bias's).
  bool relu_in_first_product(const ExpertBatch& batch) const {
    if (!epilogue_ || batch.keep_for_backward || batch.gated || batch.act != Act::ReLU) return false;
    if (batch.in_dim % 8 != 0 || batch.width % 8 != 0) return false;
    return epilogue_->usable_as_probed();
  }

  void touched(const void* dst, std::size_t bytes, bool freed = false) {
    const char* begin = static_cast<const char*>(dst);
    const char* end = begin + bytes;
    for (std::size_t i = 0; i < weight_cache_.size();) {
      const char* b = reinterpret_cast<const char*>(weight_cache_[i].source);
      const char* e = b + weight_cache_[i].count * sizeof(float);
      const bool overlaps = begin < e && b < end;
      if (overlaps && freed) {
        release(weight_cache_[i].bf16);
        weight_cache_.erase(weight_cache_.begin() + static_cast<std::ptrdiff_t>(i));
        continue;
      }
      if (overlaps) weight_cache_[i].stale = true;
      ++i;
    }
  }

  // Offsets into one scratch allocation, each at an 8-byte boundary.
  struct Carving {
    std::size_t used = 0;
    std::size_t operator()(std::int64_t bytes) {
      const std::size_t at = used;
      used += (static_cast<std::size_t>(bytes) + 7) / 8 * 8;
      return at;
    }
  };

  // Device memory reused call after call: the stream's order keeps one call's use apart
  // from the next's. It grows and never shrinks; before memory in use is freed, the
  // stream is drained.
  struct Scratch {
    void* ptr = nullptr;
    std::size_t bytes = 0;
  };
  void* grow(Scratch& s, std::size_t bytes) {
    if (bytes > s.bytes) {
      if (s.ptr) synchronize();
      release(s.ptr);
      s.ptr = nullptr, s.bytes = 0;
      s.ptr = allocate(bytes);
      s.bytes = bytes;
    }
    return s.ptr;
  }
  // bf16 scratch for a batch's rows × width: for max(rows, its rows_bound) rows
  // (ExpertBatch::rows_bound), so that it moves with the token count, not the routing.
  void* grow_rows(Scratch& s, const ExpertBatch& batch, std::int64_t rows, std::int64_t width) {
    return grow(s, 2 * static_cast<std::size_t>(std::max(rows, batch.rows_bound) * width));
  }
  // A host table's bytes into a scratch (grown as needed), on the stream: the device copy.
  template <class T>
  const void* upload(Scratch& s, const std::vector<T>& table) {
    const std::size_t bytes = sizeof(T) * table.size();
    void* device = grow(s, bytes);
    copy_from_host(device, table.data(), bytes);
    return device;
  }
  double* partials(std::int64_t rows, std::int64_t cols) {
    return static_cast<double*>(grow(partials_, sizeof(double) * static_cast<std::size_t>(column_chunks(rows) * cols)));
  }

  // A float32 matrix of `count` elements in bf16 in `into` (one conversion launch).
  void* to_bf16(const float* src, std::int64_t count, Scratch& into) {
    void* dst = grow(into, 2 * static_cast<std::size_t>(count));
    launch_to_bf16(src, count, dst, stream_);
    return dst;
  }
  // The bf16 element `offset` of a buffer in the kept form (kernels/ops.hpp): bf16
  // values packed from the start of the float buffer.
  using Bf16 = std::uint16_t;  // storage of one bf16 value, for the operands' offsets
  static Bf16* kept_bf16(float* buffer, std::int64_t offset) { return reinterpret_cast<Bf16*>(buffer) + offset; }
  static const Bf16* kept_bf16(const float* buffer, std::int64_t offset) {
    return reinterpret_cast<const Bf16*>(buffer) + offset;
  }

  // An expert GEMM's operand in bf16: the cached copy when it is a weight converted
  // before (and unchanged since), else converted into `into`.
  const void* bf16_operand(const float* src, std::int64_t count, Scratch& into) {
    for (auto& c : weight_cache_)
      if (c.source == src && !c.stale && c.count >= static_cast<std::size_t>(count)) return c.bf16;
    return to_bf16(src, count, into);
  }
  // The weights of a grouped GEMM as its B operands: bf16 copies in bf16, else as they are.
  std::vector<const void*> weight_operands(const std::vector<const float*>& weights, std::int64_t count) {
    std::vector<const void*> b(weights.size());
    for (std::size_t g = 0; g < weights.size(); ++g)
      b[g] = precision_ == GemmPrecision::BF16 ? bf16_weights(weights[g], static_cast<std::size_t>(count))
                                               : static_cast<const void*>(weights[g]);
    return b;
  }

  // One GEMM stage of a grouped launch: the rows of A (from the first row, a_width wide),
  // each group's B, the rows of C (c_width wide), each group's bias.
  struct GroupStage {
    const void* a;
    std::int64_t a_width;
    std::vector<const void*> b;
    void* c;
    std::int64_t c_width;
    std::vector<const float*> biases;
  };
  // What the grouped GEMMs and epilogues of one call read on the device, uploaded in one
  // staged copy: per stage the A, B and C pointers of the non-empty groups (cuBLAS skips
  // none) and every group's bias, then the row offsets relative to the first row.
  struct GroupTable {
    std::vector<int> rows;  // of the non-empty groups (host, for cuBLAS)
    std::size_t used = 0, groups = 0, stages = 0;
    const void* const* device = nullptr;
    const std::int64_t* offsets = nullptr;
    std::vector<const void*> host;  // the same table on the host
    // Stage s's operands for grouped_gemm.
    GroupedOperands operands(int stage) const {
      const std::size_t at = 3 * used * static_cast<std::size_t>(stage);
      auto writable = [](const void* const* p) { return const_cast<void* const*>(p); };
      return {host.data() + at, host.data() + at + used, writable(host.data() + at + 2 * used),
              device + at,      device + at + used,      writable(device + at + 2 * used)};
    }
    const float* const* biases(int stage) const {
      return reinterpret_cast<const float* const*>(device + 3 * used * stages + groups * static_cast<std::size_t>(stage));
    }
  };
  GroupTable group_table(const std::vector<std::int64_t>& row_offsets, const std::vector<GroupStage>& stages,
                         std::size_t element_bytes) {
    GroupTable t;
    t.groups = row_offsets.size() - 1, t.stages = stages.size();
    std::vector<std::size_t> nonempty;
    for (std::size_t g = 0; g < t.groups; ++g)
      if (row_offsets[g + 1] > row_offsets[g]) nonempty.push_back(g), t.rows.push_back(static_cast<int>(row_offsets[g + 1] - row_offsets[g]));
    t.used = nonempty.size();
    std::vector<const void*> table;
    for (const GroupStage& s : stages) {
      auto row = [&](const void* base, std::int64_t width, std::size_t g) {
        return static_cast<const char*>(base) +
               static_cast<std::size_t>((row_offsets[g] - row_offsets.front()) * width) * element_bytes;
      };
      for (std::size_t g : nonempty) table.push_back(row(s.a, s.a_width, g));
      for (std::size_t g : nonempty) table.push_back(s.b[g]);
      for (std::size_t g : nonempty) table.push_back(row(s.c, s.c_width, g));
    }
    for (const GroupStage& s : stages) table.insert(table.end(), s.biases.begin(), s.biases.end());
    std::vector<std::int64_t> offsets(row_offsets.size());
    for (std::size_t g = 0; g < offsets.size(); ++g) offsets[g] = row_offsets[g] - row_offsets.front();
    const std::size_t table_bytes = table.size() * sizeof(void*), offset_bytes = offsets.size() * sizeof(std::int64_t);
    // Room for every group non-empty, so that the table moves with the groups' count,
    // not with how many the routing left empty (a graph recorded before stays valid).
    std::size_t most = 3 * t.stages * t.groups;
    for (const GroupStage& s : stages) most += s.biases.size();
    grow(table_, most * sizeof(void*) + offset_bytes);
    std::vector<char> host(table_bytes + offset_bytes);
    std::memcpy(host.data(), table.data(), table_bytes);
    std::memcpy(host.data() + table_bytes, offsets.data(), offset_bytes);
    const auto* device = static_cast<const char*>(upload(table_, host));
    t.device = reinterpret_cast<const void* const*>(device);
    t.offsets = reinterpret_cast<const std::int64_t*>(device + table_bytes);
    t.host = std::move(table);
    return t;
  }

  void release(void* ptr) noexcept {
    if (!ptr) return;
    ++frees_;
    sizes_.erase(ptr);
    if (cudaFree(ptr) != cudaSuccess) std::fprintf(stderr, "moe: cudaFree failed\n");
  }

  int device_;
  GemmPrecision precision_;
  int sms_ = 0;          // the device's multiprocessors, for split_k_slices
  bool split_k_ = true;  // MOE_GEMM_SPLIT_K
  bool bias_sums_in_epilogue_ = false;  // MOE_BIAS_GRADIENT_SUMS_IN_EPILOGUE
  bool hidden_by_element_ = false;      // MOE_HIDDEN_EPILOGUE_BY_ELEMENT
  PlanLaunch plan_launch_;              // the plans' stream, and MOE_PLAN_IN_ONE_KERNEL's choices
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  std::unique_ptr<GemmLanes> lanes_;  // the per-group GEMMs' streams
  std::unique_ptr<ReluEpilogueProducts> epilogue_;  // MOE_GEMM_EPILOGUE=1 in bf16: the trial
  std::vector<CachedWeights> weight_cache_;
  std::unordered_map<void*, std::size_t> sizes_;  // of every allocation, to invalidate on free
  std::unique_ptr<UploadRing> uploads_;
  struct PendingDownload {
    void* host_dst;
    const void* staged;
    std::size_t bytes;
  };
  std::vector<PendingDownload> pending_downloads_;  // copy_to_host_later's, landed by synchronize()
  void* downloads_ = nullptr;                        // pinned staging for them
  cudaEvent_t downloaded_ = nullptr;                 // recorded after each of them
  std::unique_ptr<GraphRecorder> recorder_;
  std::uint64_t frees_ = 0;  // memory_epoch(): device memory freed so far
  void not_while_recording(const char* what) const {
    MOE_CHECK_ARG(!recorder_->recording(), "CudaOps", what,
                  " while recording a CUDA graph; the recorded work must not wait for the GPU or read its "
                  "results on the host");
  }
  std::size_t downloads_capacity_ = 0, downloads_used_ = 0;
  Scratch table_, doubles_, partials_;
  Scratch column_table_;           // add_grouped_column_sums' chunks, groups and sums
  Scratch plan_;                   // the plans' counts, bases and flags (plan_single_rank, plan_send, plan_received)
  std::vector<cudaEvent_t> marks_;  // mark()'s events; the first marks_used_ are in use
  std::size_t marks_used_ = 0;
  Scratch x16_, z16_, h16_, y16_;  // bf16 experts: rows in, first GEMM's result, hidden, second's result
  Scratch a16_, b16_;              // bf16 operands of expert_gemm
  Scratch split_partials_;         // partial sums of products split over K: gemm()'s, the resident products'
  Scratch resident_table_;         // gather_expert_ffn_combine_resident's weights and biases
  Scratch tile_starts_;            // the resident products' first row tile of each group
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

std::unique_ptr<Ops> make_ops(int device, GemmPrecision precision, bool high_priority) {
  return std::make_unique<CudaOps>(device, precision, high_priority);
}

}  // namespace moe::kernels::cuda
