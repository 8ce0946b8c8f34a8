#include "bench_util.hpp"

#include <cblas.h>

namespace moe::bench {

DenseGemmBaseline::DenseGemmBaseline(std::int64_t tokens, std::int64_t top_k, std::int64_t hidden,
                                     std::int64_t expert, std::int64_t experts, int threads, int in_factor,
                                     std::int64_t shared_width)
    : T_(tokens), k_(top_k), H_(hidden), F_(expert), E_(experts), threads_(threads), G_(in_factor),
      S_(shared_width) {
  x_ = random_vector(T_ * H_, 1.0f, 1);
  gate_ = random_vector(H_ * E_, 0.03f, 2);
  logits_.assign(static_cast<std::size_t>(T_ * E_), 0.0f);
  rows_ = random_vector(T_ * k_ * H_, 1.0f, 3);
  w1_ = random_vector(H_ * G_ * F_, 0.03f, 4);
  hidden_.assign(static_cast<std::size_t>(T_ * k_ * G_ * F_), 0.0f);
  shared_w1_ = random_vector(H_ * G_ * S_, 0.03f, 6);
  shared_hidden_.assign(static_cast<std::size_t>(T_ * G_ * S_), 0.0f);
  shared_w2_ = random_vector(S_ * H_, 0.03f, 7);
  shared_out_.assign(static_cast<std::size_t>(T_ * H_), 0.0f);
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
            F = static_cast<int>(F_), GF = static_cast<int>(G_ * F_), E = static_cast<int>(E_);
  // out = hidden·W2: d_hidden = d_out·W2ᵀ, d_W2 = hiddenᵀ·d_out (out_ stands in for d_out)
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, F, H, 1.0f, out_.data(), H, w2_.data(), H, 0.0f,
              d_hidden_.data(), F);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, F, H, n, 1.0f, hidden_.data(), GF, out_.data(), H, 0.0f,
              d_w2_.data(), H);
  // pre = rows·W_in ([n, G·F]; d_hidden_ stands in for its gradient)
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, H, GF, 1.0f, d_hidden_.data(), GF, w1_.data(), GF, 0.0f,
              d_rows_.data(), H);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, GF, n, 1.0f, rows_.data(), H, d_hidden_.data(), GF, 0.0f,
              d_w1_.data(), GF);
  // logits = x·gate
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, H, E, 1.0f, logits_.data(), E, gate_.data(), E, 0.0f,
              d_x_.data(), H);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, E, T, 1.0f, x_.data(), H, logits_.data(), E, 0.0f,
              d_gate_.data(), E);
  if (S_ > 0) {  // the shared expert's four backward GEMMs, into scratch of the same sizes
    const int S = static_cast<int>(S_), GS = static_cast<int>(G_ * S_);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, S, H, 1.0f, shared_out_.data(), H, shared_w2_.data(), H,
                0.0f, shared_hidden_.data(), GS);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, S, H, T, 1.0f, shared_hidden_.data(), GS,
                shared_out_.data(), H, 0.0f, shared_w2_.data(), H);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, H, GS, 1.0f, shared_hidden_.data(), GS,
                shared_w1_.data(), GS, 0.0f, d_x_.data(), H);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, GS, T, 1.0f, x_.data(), H, shared_hidden_.data(), GS,
                0.0f, shared_w1_.data(), GS);
  }
}

double DenseGemmBaseline::training_flops() const { return 3.0 * flops(); }

void DenseGemmBaseline::run() {
  // OpenBLAS's own threading, on the cores the MoE run uses.
  openblas_set_num_threads(threads_);
  const int n = static_cast<int>(T_ * k_), T = static_cast<int>(T_), H = static_cast<int>(H_),
            F = static_cast<int>(F_), E = static_cast<int>(E_);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, E, H, 1.0f, x_.data(), H, gate_.data(), E,
              0.0f, logits_.data(), E);
  const int GF = static_cast<int>(G_ * F_);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, GF, H, 1.0f, rows_.data(), H, w1_.data(), GF,
              0.0f, hidden_.data(), GF);
  // The hidden rows [n, F] (the first F columns of each [G·F] row, as a glu keeps).
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, H, F, 1.0f, hidden_.data(), GF, w2_.data(), H,
              0.0f, out_.data(), H);
  if (S_ > 0) {
    const int S = static_cast<int>(S_), GS = static_cast<int>(G_ * S_);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, GS, H, 1.0f, x_.data(), H, shared_w1_.data(), GS,
                0.0f, shared_hidden_.data(), GS);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, H, S, 1.0f, shared_hidden_.data(), GS,
                shared_w2_.data(), H, 0.0f, shared_out_.data(), H);
  }
}

double DenseGemmBaseline::flops() const {
  const double per_row = 2.0 * double(H_) * double(G_ + 1);  // in (G·F wide) and out projections, per unit of width
  return double(T_) * double(k_) * per_row * double(F_) + double(T_) * per_row * double(S_) +
         2.0 * double(T_) * double(H_) * double(E_);
}

}  // namespace moe::bench
