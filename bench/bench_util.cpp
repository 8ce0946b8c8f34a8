#include "bench_util.hpp"

#include <cblas.h>

namespace moe::bench {

DenseGemmBaseline::DenseGemmBaseline(std::int64_t tokens, std::int64_t top_k, std::int64_t hidden,
                                     std::int64_t expert, std::int64_t experts, int threads)
    : T_(tokens), k_(top_k), H_(hidden), F_(expert), E_(experts), threads_(threads) {
  x_ = random_vector(T_ * H_, 1.0f, 1);
  gate_ = random_vector(H_ * E_, 0.03f, 2);
  logits_.assign(static_cast<std::size_t>(T_ * E_), 0.0f);
  rows_ = random_vector(T_ * k_ * H_, 1.0f, 3);
  w1_ = random_vector(H_ * F_, 0.03f, 4);
  hidden_.assign(static_cast<std::size_t>(T_ * k_ * F_), 0.0f);
  w2_ = random_vector(F_ * H_, 0.03f, 5);
  out_.assign(static_cast<std::size_t>(T_ * k_ * H_), 0.0f);
  d_x_.assign(x_.size(), 0.0f);
  d_gate_.assign(gate_.size(), 0.0f);
  d_rows_.assign(rows_.size(), 0.0f);
  d_w1_.assign(w1_.size(), 0.0f);
  d_hidden_.assign(hidden_.size(), 0.0f);
  d_w2_.assign(w2_.size(), 0.0f);
}

void DenseGemmBaseline::run_training() {
  run();
  const int n = static_cast<int>(T_ * k_), T = static_cast<int>(T_), H = static_cast<int>(H_),
            F = static_cast<int>(F_), E = static_cast<int>(E_);
  // out = hidden·W2: d_hidden = d_out·W2ᵀ, d_W2 = hiddenᵀ·d_out (out_ stands in for d_out)
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, F, H, 1.0f, out_.data(), H, w2_.data(), H, 0.0f,
              d_hidden_.data(), F);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, F, H, n, 1.0f, hidden_.data(), F, out_.data(), H, 0.0f,
              d_w2_.data(), H);
  // hidden = rows·W1
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, H, F, 1.0f, d_hidden_.data(), F, w1_.data(), F, 0.0f,
              d_rows_.data(), H);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, F, n, 1.0f, rows_.data(), H, d_hidden_.data(), F, 0.0f,
              d_w1_.data(), F);
  // logits = x·gate
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, H, E, 1.0f, logits_.data(), E, gate_.data(), E, 0.0f,
              d_x_.data(), H);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, E, T, 1.0f, x_.data(), H, logits_.data(), E, 0.0f,
              d_gate_.data(), E);
}

double DenseGemmBaseline::training_flops() const { return 3.0 * flops(); }

void DenseGemmBaseline::run() {
  // OpenBLAS's own threading, on the cores the MoE run uses.
  openblas_set_num_threads(threads_);
  const int n = static_cast<int>(T_ * k_), T = static_cast<int>(T_), H = static_cast<int>(H_),
            F = static_cast<int>(F_), E = static_cast<int>(E_);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, E, H, 1.0f, x_.data(), H, gate_.data(), E,
              0.0f, logits_.data(), E);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, F, H, 1.0f, rows_.data(), H, w1_.data(), F,
              0.0f, hidden_.data(), F);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, H, F, 1.0f, hidden_.data(), F, w2_.data(), H,
              0.0f, out_.data(), H);
}

double DenseGemmBaseline::flops() const {
  return 4.0 * double(T_) * double(k_) * double(H_) * double(F_) + 2.0 * double(T_) * double(H_) * double(E_);
}

}  // namespace moe::bench
