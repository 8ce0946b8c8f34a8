// The Ops operations that have a default made of the others.
#include "kernels/ops.hpp"

#include <algorithm>
#include <chrono>
#include <memory>
#include <numeric>
#include <vector>

#include "kernels/exchange_plan_steps.hpp"
#include "kernels/plan_steps.hpp"
#include "kernels/random_stream.hpp"
#include "moe/error.hpp"

namespace moe::kernels {

void Ops::expert_ffn(const ExpertBatch& batch, float* pre, float* hidden, float* out) {
  const std::int64_t H = batch.in_dim, F = batch.width, GF = batch.gated ? 2 * F : F;
  const std::int64_t first = batch.row_offsets.front(), rows = batch.row_offsets.back() - first;
  float* z = batch.gated ? pre : nullptr;  // glu: the projection, then the product
  const Act first_act = batch.gated ? Act::Identity : batch.act;
  float* first_pre = batch.gated ? nullptr : pre;
  float* first_out = batch.gated ? z : hidden;
  if (batch.row_offsets.size() == 2) {
    // One expert (the shared expert): plain linears, as before there was a batch.
    if (rows == 0) return;
    linear(batch.x + first * H, rows, H, batch.w_in[0], GF, batch.b_in[0], first_act,
           first_pre ? first_pre + first * GF : nullptr, first_out + first * GF);
    if (batch.gated) glu(z + first * GF, rows, F, batch.act, hidden + first * F);
    linear(hidden + first * F, rows, F, batch.w_out[0], H, batch.b_out[0], Act::Identity, nullptr, out + first * H);
    return;
  }
  grouped_linear(batch.x, batch.row_offsets, H, batch.w_in, GF, batch.b_in, first_act, first_pre, first_out);
  if (batch.gated) glu(z + first * GF, rows, F, batch.act, hidden + first * F);
  grouped_linear(hidden, batch.row_offsets, F, batch.w_out, H, batch.b_out, Act::Identity, nullptr, out);
}

void Ops::gather_expert_ffn(const float* src, const std::int32_t* rows, float* gathered, const ExpertBatch& batch,
                            float* pre, float* hidden, float* out) {
  const std::int64_t first = batch.row_offsets.front(), n = batch.row_offsets.back() - first, H = batch.in_dim;
  if (n > 0) gather_rows(src, rows + first, n, H, gathered + first * H);
  ExpertBatch on_gathered = batch;
  on_gathered.x = gathered;
  expert_ffn(on_gathered, pre, hidden, out);
}

namespace {

// From this many groups on, the experts' backward runs whole groups concurrently: with 64
// experts of ~400 rows (DeepSeek-like) cutting each GEMM across the cores made every core
// pack the same operands (measured on the CPU: 0.71–0.75 of sgemm before, 0.84–0.88
// after). With few experts (8 on 2 cores) whole experts per thread would leave the cores
// uneven whenever the loads differ, so the GEMMs stay cut there (not measured against).
constexpr std::int64_t kGroupsToRunConcurrently = 16;

}  // namespace

void Ops::expert_ffn_backward(const ExpertBatch& batch, const float* pre, const float* hidden, float* dy,
                              const ExpertBatchGradients& grads, float* d_hidden, float* d_pre, float* dx) {
  const std::int64_t H = batch.in_dim, F = batch.width, GF = batch.gated ? 2 * F : F;
  const auto groups = static_cast<std::int64_t>(batch.row_offsets.size()) - 1;
  auto rows_of = [&](std::int64_t g) {
    return batch.row_offsets[static_cast<std::size_t>(g) + 1] - batch.row_offsets[static_cast<std::size_t>(g)];
  };
  auto backward_of = [&](std::int64_t g) {
    const auto e = static_cast<std::size_t>(g);
    const std::int64_t begin = batch.row_offsets[e], n = rows_of(g);
    if (n == 0) return;
    float* dy_g = dy + begin * H;
    float* dh = d_hidden + begin * F;
    // y = hidden·W_out + b_out
    if (grads.b_out[e]) add_column_sums(dy_g, n, H, grads.b_out[e]);
    expert_gemm(true, false, F, H, n, 1.0f, hidden + begin * F, F, dy_g, H, 1.0f, grads.w_out[e], H);
    expert_gemm(false, true, n, F, H, 1.0f, dy_g, H, batch.w_out[e], H, 0.0f, dh, F);
    // hidden = act(pre) (ffn) or act(gate) ⊙ up (glu); pre = x·W_in + b_in
    float* dz = dh;
    if (batch.gated) {
      dz = d_pre + begin * GF;
      glu_backward(pre + begin * GF, dh, n, F, batch.act, dz);
    } else {
      activation_backward(pre + begin * F, dh, n * F, batch.act, dh);
    }
    if (grads.b_in[e]) add_column_sums(dz, n, GF, grads.b_in[e]);
    expert_gemm(true, false, H, GF, n, 1.0f, batch.x + begin * H, H, dz, GF, 1.0f, grads.w_in[e], GF);
    // ∂L/∂x, which may be written over ∂L/∂y: that is no longer needed.
    expert_gemm(false, true, n, H, GF, 1.0f, dz, GF, batch.w_in[e], GF, 0.0f, dx + begin * H, H);
  };
  if (groups >= kGroupsToRunConcurrently) {
    // Many small experts: whole experts at once, largest first, each on one thread (each
    // writes only its own rows and gradients), rather than each GEMM cut across threads.
    std::vector<std::int64_t> order(static_cast<std::size_t>(groups));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return rows_of(a) > rows_of(b); });
    for_each_concurrently(groups, [&](std::int64_t i) { backward_of(order[static_cast<std::size_t>(i)]); });
  } else {
    for (std::int64_t g = 0; g < groups; ++g) backward_of(g);
  }
}

void Ops::add_grouped_column_sums(const float* m, const std::vector<std::int64_t>& row_offsets, std::int64_t cols,
                                  const std::vector<float*>& sums) {
  for (std::size_t g = 0; g + 1 < row_offsets.size(); ++g)
    if (sums[g] && row_offsets[g + 1] > row_offsets[g])
      add_column_sums(m + row_offsets[g] * cols, row_offsets[g + 1] - row_offsets[g], cols, sums[g]);
}

void Ops::gather_expert_ffn_combine(const float* src, const std::int32_t* rows, float* gathered,
                                    const ExpertBatch& batch, float* pre, float* hidden, float* out,
                                    const CombineInto& into) {
  gather_expert_ffn(src, rows, gathered, batch, pre, hidden, out);
  combine_rows(out, batch.in_dim, into.n_out, into.offsets, into.sources, into.weights, into.rows_out);
}

void Ops::expert_combine_backward(const ExpertBatch& batch, const float* out, const float* d_dst,
                                  const CombineInto& combine, float* d_src, float* d_weights) {
  combine_backward(d_dst, out, batch.in_dim, combine.n_out, combine.offsets, combine.sources, combine.weights, d_src,
                   d_weights);
}

void Ops::begin_capture() { throw Error("Ops::begin_capture: recording ops (CUDA graphs) needs the GPU backend"); }
std::unique_ptr<CapturedWork> Ops::end_capture() { throw Error("Ops::end_capture: no recording was begun"); }
void Ops::replay(CapturedWork&) { throw Error("Ops::replay: recording ops needs a GPU backend"); }

void Ops::expert_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                      const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                      std::int64_t ldc) {
  gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void Ops::gather_expert_ffn_combine_resident(const float* src, const std::int32_t* rows_of, std::int64_t /*rows*/,
                                             const std::int64_t* offsets, float* gathered, const ExpertBatch& batch,
                                             float* pre, float* hidden, float* out, const CombineInto& into) {
  ExpertBatch on_host = batch;
  on_host.row_offsets.assign(batch.w_in.size() + 1, 0);
  copy_to_host(on_host.row_offsets.data(), offsets, sizeof(std::int64_t) * on_host.row_offsets.size());
  gather_expert_ffn_combine(src, rows_of, gathered, on_host, pre, hidden, out, into);
}

void Ops::plan_single_rank(const std::int32_t* indices, const float* weights, std::int64_t tokens, std::int64_t top_k,
                           std::int64_t experts, std::int64_t capacity, std::int64_t rows_per_expert,
                           plan::Padding padding, const SingleRankPlan& out) {
  const std::int64_t n = tokens * top_k, chunks = plan::chunk_count(n);
  const auto keyed = static_cast<std::size_t>(experts * chunks);
  std::vector<std::int32_t> slot_major_experts(static_cast<std::size_t>(n)), counts(keyed), bases(keyed),
      group_bases(keyed), entry_bases(static_cast<std::size_t>(chunks)), row_of(static_cast<std::size_t>(n));
  std::vector<std::uint8_t> kept(static_cast<std::size_t>(n));
  std::vector<std::int64_t> offsets(static_cast<std::size_t>(experts + 1)), entries(1),
      unwanted_kept(out.host_kept_per_expert ? 0 : static_cast<std::size_t>(experts));
  std::int64_t* kept_per_expert = out.host_kept_per_expert ? out.host_kept_per_expert : unwanted_kept.data();
  plan::PlanArrays p{indices, weights, tokens, top_k, experts, capacity, rows_per_expert, slot_major_experts.data(),
                     counts.data(), bases.data(), group_bases.data(), entry_bases.data(), kept.data(), row_of.data(),
                     out.expert_offsets ? out.expert_offsets : offsets.data(), entries.data(), kept_per_expert,
                     out.grouped_tokens, out.combine_offsets, out.combine_sources, out.combine_weights, out.entry_slot};
  p.padding = padding;
  plan::run_plan_steps_serially(p);
}

void Ops::plan_send(const std::int32_t* indices, const float* weights, std::int64_t tokens, std::int64_t top_k,
                    std::int64_t experts, std::int64_t capacity, int ranks, int own_rank, bool deduplicate,
                    const SendPlan& out) {
  const std::int64_t n = tokens * top_k, chunks = plan::chunk_count(n);
  const auto keyed = static_cast<std::size_t>(experts * chunks), by_rank = static_cast<std::size_t>(ranks * chunks);
  const auto items = static_cast<std::size_t>(n), P = static_cast<std::size_t>(ranks);
  std::vector<std::int32_t> slot_major_experts(items), counts(keyed), bases(keyed), group_bases(keyed), row_keys(items),
      record_keys(items), row_bases(by_rank), record_bases(by_rank), start_bases(static_cast<std::size_t>(chunks));
  std::vector<std::uint8_t> kept(items);
  std::vector<std::int64_t> rows_begin(P), records_begin(P), total_rows(1);
  plan::PlanArrays admission{};
  admission.indices = indices, admission.weights = weights;
  admission.tokens = tokens, admission.top_k = top_k, admission.experts = experts, admission.capacity = capacity;
  admission.slot_major_experts = slot_major_experts.data(), admission.counts = counts.data();
  admission.bases = bases.data(), admission.group_bases = group_bases.data(), admission.kept = kept.data();
  admission.kept_per_expert = out.host_kept_per_expert;
  plan::run_send_plan_steps_serially(plan::SendPlanArrays{
      admission, ranks, own_rank, deduplicate, row_keys.data(), record_keys.data(), row_bases.data(),
      record_bases.data(), start_bases.data(), rows_begin.data(), records_begin.data(), total_rows.data(),
      out.host_rows_per_rank, out.host_assignments_per_rank, out.row_token, out.records, out.assignment_slot,
      out.token_offsets, out.token_rows});
}

void Ops::plan_received(const plan::AssignmentRecord* records, std::int64_t count, std::int64_t rows,
                        std::int64_t local_experts, const ReceivedPlan& out) {
  const std::int64_t chunks = plan::chunk_count(count);
  const auto keyed = static_cast<std::size_t>(local_experts * chunks);
  std::vector<std::int32_t> counts(keyed), start_bases(static_cast<std::size_t>(chunks)), group_bases(keyed);
  std::vector<std::int64_t> kept_per_expert(static_cast<std::size_t>(local_experts)),
      offsets(static_cast<std::size_t>(local_experts + 1)), starts(1);
  plan::run_receive_plan_steps_serially(plan::ReceivePlanArrays{
      records, count, rows, local_experts, counts.data(), start_bases.data(), group_bases.data(),
      kept_per_expert.data(), offsets.data(), starts.data(), out.grouped_rows, out.combine_offsets,
      out.combine_sources, out.combine_weights});
}

std::size_t Ops::mark() {
  host_marks_.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count());
  return host_marks_.size() - 1;
}
double Ops::seconds_between(std::size_t a, std::size_t b) { return host_marks_.at(b) - host_marks_.at(a); }
void Ops::release_marks(std::size_t first) noexcept {
  if (first < host_marks_.size()) host_marks_.resize(first);
}

void Ops::sum_squares_each(const std::vector<const float*>& x, const std::vector<std::int64_t>& n, double* sums) {
  for (std::size_t i = 0; i < x.size(); ++i) sums[i] = sum_squares(x[i], n[i]);
}

void Ops::fill_normal(float* out, std::int64_t count, std::uint64_t seed, std::uint64_t stream) {
  fill_normal_on_host(out, count, stream_start(seed, stream));
}

void Ops::for_each_concurrently(std::int64_t count, const std::function<void(std::int64_t)>& fn) {
  for (std::int64_t i = 0; i < count; ++i) fn(i);
}

}  // namespace moe::kernels
