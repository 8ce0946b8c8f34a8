// GEMM on the CPU with OpenMP owning the cores: the output is cut into one block per
// OpenMP thread and each block is one single-threaded cblas_sgemm, followed by an
// optional per-block epilogue while the block is still warm in cache.
//
// Why not OpenBLAS's own threads: its pool and OpenMP's both spin on every core, and
// alternating GEMMs with OpenMP element-wise passes oversubscribes the machine (docs/design.md
// §4a measured 40 ms instead of 22 ms). With one owner, a rank's share of the cores is
// simply its OpenMP thread count.
#pragma once

#include <cstdint>
#include <functional>

namespace moe::kernels::cpu {

// Called once per block after its GEMM: rows [row_begin, row_end) and columns
// [col_begin, col_end) of C are final.
using BlockEpilogue = std::function<void(std::int64_t row_begin, std::int64_t row_end,
                                         std::int64_t col_begin, std::int64_t col_end)>;
// Called once per block before its GEMM (to seed C, e.g. with a bias when beta = 1).
using BlockPrologue = BlockEpilogue;

// Below this many flops a fork/join costs more than the second core gives.
constexpr double kMinFlopsToSplit = 4.0e6;

// How many parts work of `flops` is worth cutting into: 1 below kMinFlopsToSplit or
// inside a parallel region (Ops::for_each_concurrently: this thread is the only one),
// else the OpenMP thread count, at most max_parts.
std::int64_t parts_worth(double flops, std::int64_t max_parts);

// part(p) for every p < parts, one OpenMP thread each; on the calling thread when
// parts == 1. part must not throw.
void run_parts(std::int64_t parts, const std::function<void(std::int64_t)>& part);

// Keeps OpenBLAS single-threaded while any guard lives and restores the caller's setting
// when the last one ends, so a program that uses OpenBLAS elsewhere keeps its own thread
// count. The setting is process-wide and guards may live on several threads at once
// (`moe train --label-ahead on`: the teacher's forward beside the student's step), so
// the first guard saves the setting and the last restores it: a guard that saved and
// restored its own would turn OpenBLAS's threads back on under another thread's GEMMs
// (openblas_set_num_threads is not safe while another thread is in one). Construct it
// outside the parallel region.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas();
  ~SingleThreadedBlas();
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;
};

// OpenBLAS's thread setting, and setting it; 0 and a no-op where the BLAS has none (then
// SingleThreadedBlas does nothing either).
int blas_thread_setting();
void set_blas_thread_setting(int threads);

// One cblas_sgemm on the calling thread (with k = 0 meaning C = beta · C).
void serial_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                 const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                 std::int64_t ldc);

void parallel_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                   float alpha, const float* a, std::int64_t lda, const float* b,
                   std::int64_t ldb, float beta, float* c, std::int64_t ldc,
                   const BlockPrologue& prologue = nullptr,
                   const BlockEpilogue& epilogue = nullptr);

}  // namespace moe::kernels::cpu
