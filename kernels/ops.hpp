// The numeric operations a MoE layer is made of, behind one interface so that the
// layer, router and expert code are written once and run on any backend. Every
// pointer lives in the backend's memory (host for CPU, device for CUDA); all
// matrices are row-major and contiguous unless a leading dimension says otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "kernels/activation.hpp"
#include "kernels/exchange_plan_steps.hpp"
#include "kernels/router_row.hpp"

namespace moe::kernels {

enum class Backend { CPU, CUDA };

// A layer of experts over their grouped rows, for Ops::expert_ffn: group g owns the
// rows [row_offsets[g], row_offsets[g+1]) of x [rows, in_dim] and the weights w_in[g]
// [in_dim, G·width], b_in[g], w_out[g] [width, in_dim], b_out[g] (G = 2 when gated;
// biases may be null). The vectors are host arrays of backend pointers.
struct ExpertBatch {
  const float* x = nullptr;
  std::vector<std::int64_t> row_offsets;
  std::int64_t in_dim = 0, width = 0;
  bool gated = false;  // glu: act(z[:, :width]) ⊙ z[:, width:]; else ffn: act(z)
  Act act = Act::ReLU;
  // false (an inference forward): nothing reads pre or hidden afterwards, so a backend
  // may leave them unwritten. true: they are written in the backend's kept form (Ops,
  // "Kept activations").
  bool keep_for_backward = true;
  // For the backward: whether x holds rows a training gather_expert_ffn gathered, in the
  // kept form (the routed experts' rows), or float32 rows as given (the shared
  // expert's tokens).
  bool x_kept = false;
  std::vector<const float*> w_in, b_in, w_out, b_out;
  // The most rows a call of this token count can have in its layout, whatever the
  // routing (0: row_offsets' own). A backend sizes its row scratch for
  // max(rows, rows_bound), so that it moves with the token count only: the padded
  // layout's rows follow the routing, and a CUDA graph recorded at that token count
  // must outlive eager calls with other routings.
  std::int64_t rows_bound = 0;
};

// Where the experts' backward accumulates, per group of an ExpertBatch: the gradients
// of w_in, b_in, w_out and b_out (host arrays of backend pointers; a bias's may be null
// where the batch has no bias).
struct ExpertBatchGradients {
  std::vector<float*> w_in, b_in, w_out, b_out;
};

// A weighted combine's entries and target (Ops::combine_rows): rows_out[r] =
// Σ_{a in [offsets[r], offsets[r+1])} weights[a] · src[sources[a]] for r < n_out, in
// entry order; weights null means 1. Backend memory.
struct CombineInto {
  std::int64_t n_out;
  const std::int32_t* offsets;
  const std::int32_t* sources;
  const float* weights;
  float* rows_out;
};

// Where Ops::plan_single_rank writes: the grouped rows and the combine's entries in
// backend memory, sized for tokens·top_k entries (only the A kept are written; a
// padded plan's grouped_tokens holds E·R), and the kept count per expert in host
// memory, there after the next synchronize().
struct SingleRankPlan {
  std::int32_t* grouped_tokens;   // [A] the token of each grouped row, by (expert, token, slot); -1: padding
  std::int32_t* combine_offsets;  // [tokens + 1] each token's entries …
  std::int32_t* combine_sources;  // [A] … the grouped row of each kept assignment, by token in slot order
  float* combine_weights;         // [A] … its weight
  std::int32_t* entry_slot;       // [A] … and its assignment t·top_k + j
  std::int64_t* host_kept_per_expert;  // [experts]; null: not wanted (nothing waits for it)
  // [experts + 1] in backend memory: expert e's grouped rows begin at expert_offsets[e]
  // (the end at [experts]); null: not wanted. What gather_expert_ffn_combine_resident
  // reads, so that a forward need not wait for the kept counts.
  std::int64_t* expert_offsets = nullptr;
};

// Where Ops::plan_send writes (docs/design.md §4b, P > 1): the send layout in backend
// memory, sized for tokens·top_k rows and records (the first R and A are written), and
// the counts in host memory, there after the next synchronize().
struct SendPlan {
  std::int32_t* row_token;              // [R] the token of each row, by destination then token
  plan::AssignmentRecord* records;      // [A] the rows' assignments, row by row
  std::int32_t* assignment_slot;        // [A] t·top_k + j of each record
  std::int32_t* token_offsets;          // [tokens + 1] each token's rows …
  std::int32_t* token_rows;             // [R] … in the send order
  std::int64_t* host_rows_per_rank;         // [ranks]
  std::int64_t* host_assignments_per_rank;  // [ranks]
  std::int64_t* host_kept_per_expert;       // [experts]
};

// Where Ops::plan_received writes: an expert owner's plan over the rows it received,
// in backend memory, as load_plan (src/expert_compute.hpp) fills an ExpertWorkspace.
struct ReceivedPlan {
  std::int32_t* grouped_rows;     // [A] the received row of each grouped row, by (local expert, row)
  std::int32_t* combine_offsets;  // [rows + 1] each row's records …
  std::int32_t* combine_sources;  // [A] … the grouped row of each
  float* combine_weights;         // [A] … its weight
};

// Work recorded once and replayed (a CUDA graph), with what its replays read.
class CapturedWork {
 public:
  virtual ~CapturedWork() = default;
};

// Kept activations. What a training forward keeps for its backward (the gathered rows
// of gather_expert_ffn, the pre-activations and hidden of expert_ffn, the outputs of
// gather_expert_ffn_combine) is in the backend's kept form, which only its own
// expert_ffn_backward and expert_combine_backward read: float32, or where keeps_bf16()
// (CUDA in bf16) bf16 values packed from the start of the same float buffers, row r of
// a w-wide array at bf16 element r·w. A bf16 training step then moves its rows in bf16
// from end to end: no float32 copy is written that nothing would read, and its
// products take their bf16 operands as they are.
class Ops {
 public:
  virtual ~Ops() = default;
  virtual Backend backend() const = 0;
  // The priority of every stream the ops launch on, as CUDA counts it (lower starts
  // first; make_cuda_ops' high_priority); 0 on the CPU, which has none.
  virtual int stream_priority() const { return 0; }

  // Whether the kept form is bf16 (above); the floats a buffer needs to keep `values`.
  virtual bool keeps_bf16() const { return false; }
  std::size_t kept_floats(std::size_t values) const { return keeps_bf16() ? (values + 1) / 2 : values; }

  // Memory in the backend's space. allocate never returns null (it throws).
  virtual void* allocate(std::size_t bytes) = 0;
  virtual void deallocate(void* ptr) noexcept = 0;
  virtual void copy_to_host(void* host_dst, const void* src, std::size_t bytes) = 0;
  // copy_to_host without the wait: host_dst holds the bytes after the next synchronize()
  // or wait_for_downloads() or copy_to_host(), so that several results cost one wait.
  // Default: copy_to_host.
  virtual void copy_to_host_later(void* host_dst, const void* src, std::size_t bytes) {
    copy_to_host(host_dst, src, bytes);
  }
  // Waits for the copies copy_to_host_later queued (and what was queued before them),
  // not for work queued since, which the device goes on running while the host reads
  // them (the layer queues its shared expert there). Default: synchronize().
  virtual void wait_for_downloads() { synchronize(); }
  virtual void copy_from_host(void* dst, const void* host_src, std::size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, std::size_t bytes) = 0;
  virtual void fill_zero(void* dst, std::size_t bytes) = 0;
  // Waits until every op issued so far has finished (a no-op on the CPU).
  virtual void synchronize() = 0;
  // Timing phases without a wait at each: mark() notes the point the queued work has
  // reached when the mark is passed (the host's clock by default, where work is done
  // when issued; an event on a GPU's stream), and seconds_between(a, b) waits for b
  // and gives the time from a to b. Marks form a stack: release_marks(first) forgets
  // `first` and every later mark.
  virtual std::size_t mark();
  virtual double seconds_between(std::size_t a, std::size_t b);
  virtual void release_marks(std::size_t first) noexcept;
  // Memory the ops did not write has changed (a framework updated parameters in
  // place): anything derived from it, such as a cached low-precision copy, is stale.
  virtual void written_elsewhere(const void* /*dst*/, std::size_t /*bytes*/) {}

  // Recording (docs/design.md §4b; a GPU's CUDA graphs): the ops issued between
  // begin_capture and end_capture are recorded instead of run, and replay runs them
  // again. While recording, an op that would wait or copy to the host is an error;
  // copies from the host are recorded with a copy of their bytes that the recording
  // keeps. A replay reads the memory the recorded ops read, so it is valid while
  // nothing recorded has been freed: memory_epoch() counts the frees (the CPU counts
  // them too, for its tests). The default (the CPU) has no recording and throws.
  virtual void begin_capture();
  virtual std::unique_ptr<CapturedWork> end_capture();
  virtual void abort_capture() noexcept {}
  virtual void replay(CapturedWork& work);
  virtual std::uint64_t memory_epoch() const { return 0; }

  // C[m,n] = alpha · op(A) · op(B) + beta · C, op = transpose when trans_* is true.
  virtual void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                    float alpha, const float* a, std::int64_t lda, const float* b,
                    std::int64_t ldb, float beta, float* c, std::int64_t ldc) = 0;

  // gemm() for the experts' own products (their backward): where the backend runs the
  // experts in a lower precision (CUDA with bf16), these run in it too, with float32
  // results; the router's and other products stay in gemm()'s precision. Default: gemm().
  virtual void expert_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                           const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                           std::int64_t ldc);

  // out[n,N] = act(x[n,K] · w[K,N] + bias[N]); bias may be null. When pre_act is not
  // null it receives x·w + bias (kept for the backward pass).
  virtual void linear(const float* x, std::int64_t n, std::int64_t in_dim, const float* w,
                      std::int64_t out_dim, const float* bias, Act act, float* pre_act,
                      float* out) = 0;

  // linear() for several weight matrices at once, as one grouped GEMM where the
  // backend has it: the rows [row_offsets[g], row_offsets[g+1]) of x and out (and
  // pre_act) go through weights[g] and biases[g] (host arrays of backend pointers;
  // row_offsets is a host array of groups + 1 entries). A group with no rows is skipped.
  virtual void grouped_linear(const float* x, const std::vector<std::int64_t>& row_offsets, std::int64_t in_dim,
                              const std::vector<const float*>& weights, std::int64_t out_dim,
                              const std::vector<const float*>& biases, Act act, float* pre_act, float* out) = 0;

  // Every expert of the batch on its rows: z = x·w_in + b_in, hidden = act(z) (ffn) or
  // act(z[:, :F]) ⊙ z[:, F:] (glu), out = hidden·w_out + b_out. z goes to pre [rows, G·F]
  // when pre is not null (glu needs it); hidden is [rows, F], out [rows, in_dim]; with
  // keep_for_backward pre and hidden are in the kept form. The default is
  // grouped_linear, glu, grouped_linear (linear for a single group); the CPU runs each
  // thread's rows through whole pipelines (kernels/cpu/expert_ffn.cpp); CUDA in bf16
  // keeps the intermediate in bf16 between two grouped products (cuda_ops.cu).
  virtual void expert_ffn(const ExpertBatch& batch, float* pre, float* hidden, float* out);
  // The experts' input rows gathered, then expert_ffn on them: row r of the batch is
  // src[rows[r]] (-1: zeros), written to gathered [r, in_dim] in the kept form, and
  // batch.x is taken to be `gathered`. The default is gather_rows then expert_ffn. A
  // backend may gather into its own form of the rows instead and leave `gathered`
  // unwritten when !batch.keep_for_backward (only a backward reads it): CUDA in bf16
  // gathers straight into the bf16 rows its first GEMM reads, one pass where a gather
  // and a conversion were two, and for a backward those rows are `gathered`.
  virtual void gather_expert_ffn(const float* src, const std::int32_t* rows, float* gathered,
                                 const ExpertBatch& batch, float* pre, float* hidden, float* out);
  // gather_expert_ffn, then combine_rows of its output `out` (rows numbered as in `out`)
  // into `into`. The default is those two. A backend may combine from its own form of
  // the experts' products: CUDA in bf16 adds the output bias as it combines the bf16
  // products, one pass where the output epilogue and the combine were two. Without a
  // backward `out` may then be left unwritten; with one it holds the outputs in the
  // kept form of outputs, which only expert_combine_backward reads: float32 outputs, or
  // where keeps_bf16() the bf16 products before their output bias (packed as above).
  virtual void gather_expert_ffn_combine(const float* src, const std::int32_t* rows, float* gathered,
                                         const ExpertBatch& batch, float* pre, float* hidden, float* out,
                                         const CombineInto& into);
  // gather_expert_ffn_combine for an inference forward (!batch.keep_for_backward) whose
  // grouping only the backend holds, so that nothing waits for the routing (a CUDA graph
  // can record it; MoELayer::forward_async without static shapes): group g's rows are
  // [offsets[g], offsets[g+1]) of `rows` grouped rows, offsets (groups + 1 values from 0
  // to rows, in backend memory) as plan_single_rank's expert_offsets write them.
  // batch.row_offsets is not read; its weights and biases are per group.
  // The default brings the offsets to the host (which waits, on a device) and runs
  // gather_expert_ffn_combine; where groups_resident(batch) nothing waits: the CPU,
  // whose memory is the host's, and CUDA in bf16 (kernels/cuda/resident_gemm.cuh).
  virtual void gather_expert_ffn_combine_resident(const float* src, const std::int32_t* rows_of, std::int64_t rows,
                                                  const std::int64_t* offsets, float* gathered,
                                                  const ExpertBatch& batch, float* pre, float* hidden, float* out,
                                                  const CombineInto& into);
  virtual bool groups_resident(const ExpertBatch& /*batch*/) const { return backend() == Backend::CPU; }
  // The combine's backward through the outputs `out` of gather_expert_ffn_combine on
  // the same batch (kept for a backward): for every entry a of output row r (the
  // combine's entries; combine.rows_out is not read), d_src[sources[a]] = weights[a] ·
  // d_dst[r] and d_weights[a] = d_dst[r] · (the expert output of row sources[a]);
  // d_weights may be null. The default is combine_backward on `out`; CUDA in bf16 reads
  // the bf16 products and adds their output biases as it goes.
  virtual void expert_combine_backward(const ExpertBatch& batch, const float* out, const float* d_dst,
                                       const CombineInto& combine, float* d_src, float* d_weights);
  // Whether gather_expert_ffn_combine without a backward uses its float32 gathered,
  // pre, hidden and out; when false they may be null, so a caller need not hold them
  // (at the fine-grained config, 8192 tokens, they are about 1.4 GB). CUDA in bf16:
  // false; the default: true.
  virtual bool expert_scratch_for_inference() const { return true; }
  // The backward of expert_ffn on the same batch (batch.x, kept or not as batch.x_kept
  // says, and pre [rows, G·F] and hidden [rows, F] as its forward kept them): given dy
  // [rows, H] = ∂L/∂out, accumulates each group's parameter gradients into grads and
  // writes dx [rows, H] = ∂L/∂x, which may alias dy. d_hidden [rows, F] and, gated,
  // d_pre [rows, 2F] are scratch; d_pre may be null where !needs_pre_gradient_scratch().
  // The default runs each group's products and element-wise backward, groups at once
  // through for_each_concurrently from 16 groups on (largest first); CUDA runs the
  // element-wise backward and the bias sums over every group at once and the groups'
  // products on its GEMM lanes, in bf16 on the kept bf16 rows, with ∂L/∂y converted
  // once and ∂L/∂z written in bf16.
  virtual void expert_ffn_backward(const ExpertBatch& batch, const float* pre, const float* hidden, float* dy,
                                   const ExpertBatchGradients& grads, float* d_hidden, float* d_pre, float* dx);
  // Whether a gated expert_ffn_backward needs its float32 d_pre: not in the kept bf16
  // form, whose backward writes ∂L/∂z in bf16 into scratch of its own (at the
  // Mixtral-like config, 16 384 rows of 2 · 14 336, d_pre would be 1.9 GB unused).
  bool needs_pre_gradient_scratch() const { return !keeps_bf16(); }
  // Calls fn(i) for every i < count, several at once where the backend can: on the CPU
  // one OpenMP thread per call, and the ops fn calls run on that thread alone. The calls
  // must not write what another call reads or writes; they are taken in order of i, so
  // put the largest first. The default calls them one after the other.
  virtual void for_each_concurrently(std::int64_t count, const std::function<void(std::int64_t)>& fn);
  // Per row of logits[T,E] (kernels/router_row.hpp route_row): the router's
  // normalised scores into probs[T,E], top-k into indices[T,k] and weights[T,k],
  // log-sum-exp into lse[T] when not null. expert_bias [E] may be null.
  virtual void route(const float* logits, std::int64_t tokens, const RouterParams& params,
                     const float* expert_bias, float* probs, std::int32_t* indices, float* weights,
                     float* lse) = 0;

  // glu experts (kernels/activation.hpp): h[n,F] = act(z[:, :F]) ⊙ z[:, F:] for z [n, 2F].
  virtual void glu(const float* z, std::int64_t n, std::int64_t width, Act act, float* h) = 0;
  // Its backward: dz [n, 2F] from dh [n, F] (dz does not alias z or dh).
  virtual void glu_backward(const float* z, const float* dh, std::int64_t n, std::int64_t width, Act act,
                            float* dz) = 0;

  // out[r,:] += g_r · y[r,:] for r < n, g_r = sigmoid(gate_logit[r]), or 1 when
  // gate_logit is null: the shared expert's output added to the routed output.
  virtual void gated_add(const float* y, const float* gate_logit, std::int64_t n, std::int64_t width,
                         float* out) = 0;
  // Its backward: d_y[r,:] = g_r · d_out[r,:]; d_gate_logit[r] = (d_out[r,:]·y[r,:]) · g_r (1 − g_r)
  // (skipped when gate_logit is null).
  virtual void gated_add_backward(const float* d_out, const float* y, const float* gate_logit, std::int64_t n,
                                  std::int64_t width, float* d_y, float* d_gate_logit) = 0;

  // dst[i,:] = src[rows[i],:] for i < n; rows of `width` floats. rows[i] = -1 makes
  // row i zero: a padding row of a capacity-padded plan (docs/design.md §4b).
  virtual void gather_rows(const float* src, const std::int32_t* rows, std::int64_t n,
                           std::int64_t width, float* dst) = 0;

  // dst[r,:] = Σ_{a in [offsets[r], offsets[r+1])} weights[a] · src[sources[a],:] for
  // r < n_out (weights null means 1); a row with no entries becomes zero. This is the
  // one combine: expert outputs into tokens, and returned rows into a token's output.
  virtual void combine_rows(const float* src, std::int64_t width, std::int64_t n_out,
                            const std::int32_t* offsets, const std::int32_t* sources,
                            const float* weights, float* dst) = 0;

  // dst[positions[i]] = values[i] for i < n (positions distinct).
  virtual void scatter(const float* values, const std::int32_t* positions, std::int64_t n, float* dst) = 0;

  // The single-rank dispatch plan where the routing lives (kernels/plan_steps.hpp,
  // docs/design.md §4b), from indices and weights [tokens·top_k] in backend memory,
  // into `out`, capacity ≤ tokens·top_k. rows_per_expert = 0 packs the grouped rows;
  // R > 0 pads: with Padding::Room (R at least every expert's kept count) expert e
  // gets rows [e·R, e·R + R), those past its kept ones padding (grouped token -1); with
  // Most or RoomIfFits, R is only the room, and plan::padded_rows decides from the kept
  // counts (grouped_tokens then holds max(E·R, T·k)). The default runs the steps one thread at a time in host
  // memory, which costs O(T·k·(E + 256)): the CPU layer plans on the host unless asked
  // (MOE_SINGLE_RANK_PLAN=steps, which tests this path without a GPU).
  virtual void plan_single_rank(const std::int32_t* indices, const float* weights, std::int64_t tokens,
                                std::int64_t top_k, std::int64_t experts, std::int64_t capacity,
                                std::int64_t rows_per_expert, plan::Padding padding, const SingleRankPlan& out);
  // Whether a single-rank layer uses plan_single_rank, and a distributed one plan_send
  // and plan_received, unless told otherwise.
  virtual bool plans_where_routed() const { return false; }

  // The distributed plan where the routing lives (kernels/exchange_plan_steps.hpp):
  // plan_send is the sender's half, from indices and weights [tokens·top_k] in backend
  // memory (experts owned in blocks of experts/ranks); plan_received the owner's, from
  // the `count` records it received for `rows` rows. Defaults: the steps one thread at
  // a time in host memory, O(T·k·(E + 256)): the CPU layer plans on the host unless
  // asked (MOE_EXCHANGE_PLAN=steps, which tests these without a GPU).
  virtual void plan_send(const std::int32_t* indices, const float* weights, std::int64_t tokens, std::int64_t top_k,
                         std::int64_t experts, std::int64_t capacity, int ranks, int own_rank, bool deduplicate,
                         const SendPlan& out);
  virtual void plan_received(const plan::AssignmentRecord* records, std::int64_t count, std::int64_t rows,
                             std::int64_t local_experts, const ReceivedPlan& out);

  // host_sums[E] (float64) = column sums of m[rows, E], summed in a fixed order so the
  // result does not depend on the thread count; there as copy_to_host_later's bytes are
  // (after the next synchronize() or wait_for_downloads()).
  virtual void column_sums_later(const float* m, std::int64_t rows, std::int64_t cols, double* host_sums) = 0;

  // ---- Backward ----

  // The combine's backward for the same CSR: for every entry a of output row r,
  // d_src[sources[a]] = weights[a] · d_dst[r] and d_weights[a] = d_dst[r] · src[sources[a]].
  // Every source row must appear in exactly one entry (true of grouped expert rows).
  virtual void combine_backward(const float* d_dst, const float* src, std::int64_t width,
                                std::int64_t n_out, const std::int32_t* offsets,
                                const std::int32_t* sources, const float* weights,
                                float* d_src, float* d_weights) = 0;

  // dz[i] = dh[i] · act'(z[i]); dz may alias dh.
  virtual void activation_backward(const float* z, const float* dh, std::int64_t n, Act act,
                                   float* dz) = 0;

  // sums[c] += Σ_r m[r, c], in a fixed order (bias gradients).
  virtual void add_column_sums(const float* m, std::int64_t rows, std::int64_t cols,
                               float* sums) = 0;
  // add_column_sums over each group of rows [row_offsets[g], row_offsets[g+1]) of m
  // into sums[g] (a null sums[g] skips its group), each with the bits add_column_sums
  // gives it (every expert's bias gradient). The default calls it per group; CUDA sums
  // every group in two launches where that took two per group.
  virtual void add_grouped_column_sums(const float* m, const std::vector<std::int64_t>& row_offsets,
                                       std::int64_t cols, const std::vector<float*>& sums);

  // Per token (kernels/router_row.hpp router_backward_row): d_logits[T,E] from the
  // gradient of each slot's weight d_weights[T,k] (0 for a dropped slot), the aux-loss
  // gradient per expert aux_grad[E] (host-side constant, in backend memory) and the
  // z-loss scale; logits, probs, indices and lse as route() left them.
  virtual void router_backward(const float* logits, const float* probs, const std::int32_t* indices,
                               const float* d_weights, const float* lse, std::int64_t tokens,
                               const RouterParams& params, const float* aux_grad, float z_scale,
                               float* d_logits) = 0;

  // out[i] = element i of the standard normal stream (seed, stream) of
  // src/initialization.hpp's fill_normal (kernels/random_stream.hpp), made where out
  // lives: synthetic token rows without a host round trip. Default: on the host.
  virtual void fill_normal(float* out, std::int64_t count, std::uint64_t seed, std::uint64_t stream);

  // ---- Optimizer arithmetic, element-wise ----

  // x += y
  virtual void add(float* x, const float* y, std::int64_t n) = 0;
  // x *= s
  virtual void scale(float* x, std::int64_t n, float s) = 0;
  // Σ x² in float64, in a fixed order.
  virtual double sum_squares(const float* x, std::int64_t n) = 0;
  // sums[i] (host) = sum_squares(x[i], n[i]), bit for bit, for several arrays with one
  // wait for the device instead of one each (a gradient norm over every tensor).
  virtual void sum_squares_each(const std::vector<const float*>& x, const std::vector<std::int64_t>& n,
                                double* sums);
  // SGD with momentum and decoupled weight decay (kernels/optimizer_math.hpp).
  virtual void sgd_update(float* param, const float* grad, float* momentum, std::int64_t n,
                          float lr, float mu, float weight_decay) = 0;
  // AdamW (kernels/optimizer_math.hpp); bias corrections 1 − βᵗ passed in.
  virtual void adamw_update(float* param, const float* grad, float* m, float* v,
                            std::int64_t n, float lr, float beta1, float beta2, float eps,
                            float weight_decay, float correction1, float correction2) = 0;

 private:
  std::vector<double> host_marks_;  // the default marks: seconds on a steady clock
};

// The arithmetic of the expert GEMMs on the GPU (moe::Precision, same order).
enum class GemmPrecision { FP32, TF32, BF16 };

std::unique_ptr<Ops> make_cpu_ops();

// The CUDA backend on `device`; a build without CUDA throws. (kernels/ops_factory.cpp)
// high_priority: its streams take the device's greatest priority (LayerOptions::
// high_priority), else the default.
bool cuda_built();
int cuda_device_count();  // 0 without CUDA or without a visible GPU
std::unique_ptr<Ops> make_cuda_ops(int device, GemmPrecision precision, bool high_priority = false);

}  // namespace moe::kernels
