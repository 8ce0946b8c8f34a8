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
}

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
