#include "shared_expert.hpp"

namespace moe {

void SharedExpert::forward(kernels::Ops& ops, const float* x, std::int64_t T, const ExpertStorage& expert,
                           const float* gate, Activation activation, float* out) {
  compute(ops, x, T, expert, gate, activation);
  add_into(ops, T, expert.layout.hidden, out);
}

void SharedExpert::compute(kernels::Ops& ops, const float* x, std::int64_t T, const ExpertStorage& expert,
                           const float* gate, Activation activation) {
  gated_ = gate != nullptr;
  if (T == 0) return;
  const ExpertLayout& l = expert.layout;
  const auto n = static_cast<std::size_t>(T);
  float* y = y_.resize(n * static_cast<std::size_t>(l.hidden));
  // pre and hidden in the ops' kept form, for the backward (kernels/ops.hpp).
  expert_forward(ops, x, T, expert.params(0), l, activation,
                 pre_.resize(ops.kept_floats(n * static_cast<std::size_t>(l.in_width))),
                 hidden_.resize(ops.kept_floats(n * static_cast<std::size_t>(l.width))), y);
  if (gated_) ops.gemm(false, false, T, 1, l.hidden, 1.0f, x, l.hidden, gate, 1, 0.0f, gate_logit_.resize(n), 1);
}

void SharedExpert::add_into(kernels::Ops& ops, std::int64_t T, std::int64_t hidden, float* out) {
  if (T == 0) return;
  ops.gated_add(y_.data(), gated_ ? gate_logit_.data() : nullptr, T, hidden, out);
}

void SharedExpert::backward(kernels::Ops& ops, const float* x, std::int64_t T, const float* d_out,
                            const ExpertStorage& expert, const float* gate, Activation activation,
                            ExpertStorage& expert_grads, float* gate_grad, float* dx) {
  if (T == 0) return;
  const ExpertLayout& l = expert.layout;
  const std::int64_t H = l.hidden;
  const auto n = static_cast<std::size_t>(T);
  float* d_y = d_y_.resize(n * static_cast<std::size_t>(H));
  float* d_logit = gate ? d_gate_logit_.resize(n) : nullptr;
  ops.gated_add_backward(d_out, y_.data(), gate ? gate_logit_.data() : nullptr, T, H, d_y, d_logit);
  float* d_x = d_x_.resize(n * static_cast<std::size_t>(H));
  float* d_pre = l.kind == ExpertKind::GLU && ops.needs_pre_gradient_scratch()
                     ? d_pre_.resize(n * static_cast<std::size_t>(l.in_width))
                     : nullptr;
  expert_backward(ops, x, pre_.data(), hidden_.data(), T, d_y, expert.params(0), expert_grads.grads(0), l, activation,
                  d_hidden_.resize(n * static_cast<std::size_t>(l.width)), d_pre, d_x);
  ops.add(dx, d_x, T * H);
  if (gate) {
    // logit_t = x_t · w_s: ∂w_s += Σ_t x_t ∂logit_t, and ∂x_t += ∂logit_t · w_s.
    ops.gemm(true, false, H, 1, T, 1.0f, x, H, d_logit, 1, 1.0f, gate_grad, 1);
    ops.gemm(false, true, T, H, 1, 1.0f, d_logit, 1, gate, 1, 1.0f, dx, H);
  }
}

}  // namespace moe
