#include "kernels/cpu/parallel_gemm.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <mutex>

namespace moe::kernels::cpu {
namespace {

// The guards alive in the process and the setting the first of them found.
std::mutex guards_mutex;
int live_guards = 0;
int setting_before_guards = 1;

}  // namespace

int blas_thread_setting() {
#if MOE_HAVE_OPENBLAS_THREADS
  return openblas_get_num_threads();
#else
  return 0;
#endif
}

void set_blas_thread_setting([[maybe_unused]] int threads) {
#if MOE_HAVE_OPENBLAS_THREADS
  openblas_set_num_threads(threads);
#endif
}

SingleThreadedBlas::SingleThreadedBlas() {
  const std::lock_guard<std::mutex> lock(guards_mutex);
  if (live_guards++ > 0) return;
  setting_before_guards = blas_thread_setting();
  if (setting_before_guards > 1) set_blas_thread_setting(1);
}

SingleThreadedBlas::~SingleThreadedBlas() {
  const std::lock_guard<std::mutex> lock(guards_mutex);
  if (--live_guards == 0 && setting_before_guards > 1) set_blas_thread_setting(setting_before_guards);
}

std::int64_t parts_worth(double flops, std::int64_t max_parts) {
  const std::int64_t threads = flops < kMinFlopsToSplit || omp_in_parallel() ? 1 : omp_get_max_threads();
  return std::max<std::int64_t>(1, std::min(threads, max_parts));
}

void run_parts(std::int64_t parts, const std::function<void(std::int64_t)>& part) {
  if (parts <= 1) {
    if (parts == 1) part(0);
    return;
  }
#pragma omp parallel for schedule(static, 1) num_threads(static_cast<int>(parts))
  for (std::int64_t p = 0; p < parts; ++p) part(p);
}

void serial_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                 const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                 std::int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (k > 0) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b,
                static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
    return;
  }
  // An empty inner dimension: C = beta · C (BLAS rejects lda = 0 here).
  for (std::int64_t r = 0; r < m; ++r)
    for (std::int64_t col = 0; col < n; ++col) c[r * ldc + col] = beta == 0.0f ? 0.0f : beta * c[r * ldc + col];
}

void parallel_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                   float alpha, const float* a, std::int64_t lda, const float* b,
                   std::int64_t ldb, float beta, float* c, std::int64_t ldc,
                   const BlockPrologue& prologue, const BlockEpilogue& epilogue) {
  if (m <= 0 || n <= 0) return;
  SingleThreadedBlas single_threaded;

  // Splitting the columns makes every thread pack all of A (m·k), splitting the rows
  // makes every thread pack all of B (k·n): split the side that duplicates less.
  const bool split_columns = n >= m;
  const std::int64_t extent = split_columns ? n : m;
  const std::int64_t align = split_columns ? 16 : 4;
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const std::int64_t blocks = parts_worth(flops, (extent + align - 1) / align);

  auto run_block = [&](std::int64_t block) {
    // Block boundaries on multiples of `align`, the last block takes the remainder.
    const std::int64_t units = (extent + align - 1) / align;
    const std::int64_t begin = std::min(extent, units * block / blocks * align);
    const std::int64_t end = std::min(extent, units * (block + 1) / blocks * align);
    if (begin >= end) return;
    const std::int64_t r0 = split_columns ? 0 : begin, r1 = split_columns ? m : end;
    const std::int64_t c0 = split_columns ? begin : 0, c1 = split_columns ? end : n;
    if (prologue) prologue(r0, r1, c0, c1);
    const float* a_block = a + (trans_a ? r0 : r0 * lda);
    const float* b_block = b + (trans_b ? c0 * ldb : c0);
    float* c_block = c + r0 * ldc + c0;
    serial_gemm(trans_a, trans_b, r1 - r0, c1 - c0, k, alpha, a_block, lda, b_block, ldb, beta, c_block, ldc);
    if (epilogue) epilogue(r0, r1, c0, c1);
  };

  run_parts(blocks, run_block);
}

}  // namespace moe::kernels::cpu
