// The per-element and per-row functions the CUDA kernels run (kernels/cuda/*.cuh and
// kernels/*.hpp, compiled here for the host), driven on the CPU the way the kernels
// drive them, against the CPU ops: the GPU's logic is tested on machines without one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/environment.cuh"
#include "kernels/cuda/expert_epilogue.cuh"
#include "kernels/cuda/reductions.cuh"
#include "kernels/cuda/resident_gemm.cuh"
#include "kernels/cuda/rows.cuh"
#include "kernels/cuda/split_k.cuh"
#include "kernels/ops.hpp"
#include "kernels/optimizer_math.hpp"
#include "kernels/router_row.hpp"
#include "support/expert_reference.hpp"
#include "support/test_util.hpp"

namespace cuda = moe::kernels::cuda;
using moe::kernels::Act;
using moe::testing::fill_normal;
using moe::testing::reference_activation;

namespace {

std::unique_ptr<moe::kernels::Ops> cpu = moe::kernels::make_cpu_ops();

TEST(CudaSharedLogic, GatherAndCombineRows) {
  const std::int64_t W = 13, n_src = 9;
  std::vector<float> src(n_src * W);
  fill_normal(src.data(), n_src * W, 1.0, 1);
  const std::vector<std::int32_t> rows = {4, 0, -1, 8, 8, 3};
  std::vector<float> expected(rows.size() * W);
  cpu->gather_rows(src.data(), rows.data(), std::int64_t(rows.size()), W, expected.data());
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (std::int64_t h = 0; h < W; ++h)
      EXPECT_EQ(cuda::gather_element(src.data(), rows.data(), W, std::int64_t(i), h), expected[i * W + h]);

  const std::vector<std::int32_t> offsets = {0, 2, 2, 5}, sources = {1, 7, 0, 3, 5};
  const std::vector<float> weights = {0.25f, -1.5f, 2.0f, 0.5f, 1.0f};
  std::vector<float> combined(3 * W);
  cpu->combine_rows(src.data(), W, 3, offsets.data(), sources.data(), weights.data(), combined.data());
  for (std::int64_t r = 0; r < 3; ++r)
    for (std::int64_t h = 0; h < W; ++h)
      EXPECT_NEAR(cuda::combine_element(src.data(), W, offsets.data(), sources.data(), weights.data(), r, h),
                  combined[r * W + h], 1e-6);

  // Backward: the scattered gradient rows and each entry's weight gradient.
  std::vector<float> d_dst(3 * W), d_src_cpu(n_src * W, 0.0f), d_src_gpu(n_src * W, 0.0f), dw_cpu(5);
  fill_normal(d_dst.data(), 3 * W, 1.0, 2);
  cpu->combine_backward(d_dst.data(), src.data(), W, 3, offsets.data(), sources.data(), weights.data(),
                        d_src_cpu.data(), dw_cpu.data());
  for (std::int64_t r = 0; r < 3; ++r)
    for (std::int32_t a = offsets[r]; a < offsets[r + 1]; ++a) {
      double dot = 0;
      for (std::int64_t h = 0; h < W; ++h)
        dot += cuda::combine_backward_element(d_dst.data(), src.data(), W, sources.data(), weights.data(), r, a, h,
                                              d_src_gpu.data());
      EXPECT_NEAR(dot, dw_cpu[a], 1e-5);
    }
  EXPECT_EQ(d_src_gpu, d_src_cpu);
}

TEST(CudaSharedLogic, BiasActivationMatchesLinearsEpilogue) {
  for (Act act : {Act::Identity, Act::ReLU, Act::GELU, Act::SiLU}) {
    const std::int64_t n = 7, K = 5, N = 11;
    std::vector<float> x(n * K), w(K * N), bias(N), pre(n * N), out(n * N), product(n * N), pre2(n * N);
    fill_normal(x.data(), n * K, 1.0, 3);
    fill_normal(w.data(), K * N, 1.0, 4);
    fill_normal(bias.data(), N, 1.0, 5);
    cpu->linear(x.data(), n, K, w.data(), N, bias.data(), act, pre.data(), out.data());
    cpu->gemm(false, false, n, N, K, 1.0f, x.data(), K, w.data(), N, 0.0f, product.data(), N);
    for (std::int64_t i = 0; i < n * N; ++i) {
      EXPECT_NEAR(cuda::bias_activation_element(product.data(), bias.data(), N, act, i, pre2.data()), out[i], 1e-5);
      EXPECT_NEAR(pre2[i], pre[i], 1e-5);
    }
  }
}

TEST(CudaSharedLogic, ColumnSumsAsTheKernelComputesThem) {
  // Chunked and laned as the kernel adds (kernels/cuda/reductions.cuh), against the sum
  // in float64 from the definition: fewer rows than a chunk, a whole chunk, and several
  // chunks with a partial last one.
  for (const std::int64_t rows : {std::int64_t{5}, cuda::kColumnChunkRows, std::int64_t{1000}}) {
    const std::int64_t cols = 9;
    std::vector<float> m(rows * cols);
    fill_normal(m.data(), rows * cols, 1.0, 6);
    for (std::int64_t c = 0; c < cols; ++c) {
      double expected = 0.0, magnitude = 0.0;
      for (std::int64_t r = 0; r < rows; ++r) expected += double(m[r * cols + c]), magnitude += std::fabs(m[r * cols + c]);
      EXPECT_NEAR(cuda::column_sum(m.data(), rows, cols, c), expected, 1e-12 * magnitude) << rows << " rows";
    }
  }
}

TEST(CudaSharedLogic, ExpertEpilogueAsTheBf16KernelDrivesIt) {
  // The bf16 expert path's first epilogue, row by row with the row's group found as the
  // kernel finds it, against the definition in float64: act(z + b) (ffn), or
  // act(z_gate + b_gate) · (z_up + b_up) (glu), with each row's own group's bias.
  const std::int64_t F = 6;
  const std::vector<std::int64_t> offsets = {0, 3, 3, 7};  // an empty middle group
  const int groups = 3;
  const std::int64_t rows = offsets.back();
  for (const bool gated : {false, true}) {
    for (Act act : {Act::ReLU, Act::GELU, Act::SiLU}) {
      const std::int64_t GF = gated ? 2 * F : F;
      std::vector<float> z(rows * GF), biases(groups * GF);
      fill_normal(z.data(), rows * GF, 1.0, 21);
      fill_normal(biases.data(), groups * GF, 1.0, 22);
      const std::vector<const float*> bias_of = {biases.data(), biases.data() + GF, biases.data() + 2 * GF};
      for (std::int64_t r = 0; r < rows; ++r) {
        // The kernel's tile of rows from `first`, each row's bias found for the tile.
        constexpr int kTile = cuda::kRowTile;
        const std::int64_t first = r / kTile * kTile;
        const float* tile_bias[kTile];
        cuda::tile_row_biases<kTile>(bias_of.data(), offsets.data(), groups, first,
                                     static_cast<int>(std::min<std::int64_t>(kTile, rows - first)), tile_bias);
        const float* bias = tile_bias[r - first];
        const float* own = biases.data() + (r < 3 ? 0 : 2) * GF;  // rows 0-2: group 0; 3-6: group 2
        for (std::int64_t j = 0; j < F; ++j) {
          const double g = double(z[r * GF + j]) + own[j];
          const double expected = gated ? reference_activation(act, g) * (double(z[r * GF + F + j]) + own[F + j])
                                        : reference_activation(act, g);
          const float gate = z[r * GF + j] + bias[j];
          const float up = gated ? z[r * GF + F + j] + bias[F + j] : 0.0f;
          EXPECT_NEAR(cuda::expert_hidden_value(gate, up, gated, act), expected, 1e-5 * (1.0 + std::fabs(expected)))
              << r << "," << j;
        }
      }
    }
  }
}

TEST(CudaSharedLogic, ExpertHiddenGradientAsTheBf16BackwardComputesIt) {
  // The bf16 backward's activation gradient (expert_hidden_grad, a thread's element in
  // launch_expert_hidden_backward) against the definition in float64: the activation's
  // derivative as a central difference of reference_activation, ∂L/∂gate = dh · act'(gate)
  // (ffn) or dh · up · act'(gate) (glu), ∂L/∂up = dh · act(gate); and bit for bit the
  // float32 backward kernels' elements (activation_backward's, glu_backward_element).
  std::vector<float> values(3 * 400);
  fill_normal(values.data(), static_cast<std::int64_t>(values.size()), 2.0, 23);
  for (const bool gated : {false, true})
    for (Act act : {Act::ReLU, Act::GELU, Act::SiLU, Act::GELUTanh})
      for (std::size_t i = 0; i < values.size(); i += 3) {
        const float gate = values[i], up = values[i + 1], dh = values[i + 2];
        float d_gate = 0.0f, d_up = -1.0f;
        cuda::expert_hidden_grad(dh, gate, up, gated, act, d_gate, d_up);
        const double step = 1e-6, g = gate;
        const double slope = (reference_activation(act, g + step) - reference_activation(act, g - step)) / (2 * step);
        const double want_gate = double(dh) * (gated ? double(up) : 1.0) * slope;
        EXPECT_NEAR(d_gate, want_gate, 1e-5 * (1.0 + std::fabs(want_gate))) << int(act) << " gate " << gate;
        if (gated) {
          const double want_up = double(dh) * reference_activation(act, g);
          EXPECT_NEAR(d_up, want_up, 1e-5 * (1.0 + std::fabs(want_up))) << int(act) << " gate " << gate;
          const float z[2] = {gate, up};
          float dz[2];
          moe::kernels::glu_backward_element(z, &dh, 1, act, 0, dz);
          EXPECT_EQ(d_gate, dz[0]);
          EXPECT_EQ(d_up, dz[1]);
        } else {
          EXPECT_EQ(d_up, -1.0f) << "ffn leaves d_up alone";
          EXPECT_EQ(d_gate, dh * moe::kernels::activate_grad(act, gate));  // activation_backward_kernel's element
        }
      }
}

TEST(CudaSharedLogic, EpilogueTilesFindEachRowsGroup) {
  // The epilogue kernels' tiles (expert_epilogue.cuh): every tile of up to kTile rows,
  // from every first row, finds each row's bias as the row's own group lookup does, over
  // random groupings with empty groups first, last and between; past n, null.
  constexpr int kTile = cuda::kRowTile;
  std::mt19937 random(5);
  for (int trial = 0; trial < 200; ++trial) {
    const int groups = 1 + static_cast<int>(random() % 9);
    std::vector<std::int64_t> offsets = {static_cast<std::int64_t>(random() % 3)};
    for (int g = 0; g < groups; ++g) {
      const int size = random() % 3 == 0 ? 0 : static_cast<int>(random() % 7);  // a third of the groups empty
      offsets.push_back(offsets.back() + size);
    }
    std::vector<float> storage(static_cast<std::size_t>(groups));
    std::vector<const float*> biases;  // a distinct pointer a group: the pointer names the group
    for (int g = 0; g < groups; ++g) biases.push_back(&storage[g]);
    // The kernels index rows from the batch's first: offsets relative to it.
    const std::int64_t base = offsets.front();
    for (auto& o : offsets) o -= base;
    const std::int64_t rows = offsets.back();
    for (std::int64_t first = 0; first < rows; ++first)
      for (int n = 1; n <= kTile && first + n <= rows; ++n) {
        const float* tile[kTile];
        cuda::tile_row_biases<kTile>(biases.data(), offsets.data(), groups, first, n, tile);
        for (int i = 0; i < kTile; ++i) {
          const float* expected = i < n ? biases[cuda::group_of_row(offsets.data(), groups, first + i)] : nullptr;
          // The row's group by the definition: offsets[g] <= row < offsets[g + 1].
          if (i < n) {
            int own = -1;
            for (int g = 0; g < groups; ++g)
              if (offsets[g] <= first + i && first + i < offsets[g + 1]) own = g;
            ASSERT_GE(own, 0);
            EXPECT_EQ(expected, biases[own]) << "trial " << trial << " row " << first + i;
          }
          EXPECT_EQ(tile[i], expected) << "trial " << trial << " first " << first << " n " << n << " i " << i;
        }
      }
  }
}

TEST(CudaSharedLogic, SplitKTakesThinProductsOnly) {
  // split_k.cuh on an H100's 132 multiprocessors: the routers' products of the four
  // benchmark configs split until their tiles fill the GPU; an expert-sized product and
  // a K too shallow or not divisible stay whole.
  const int sms = 132;
  EXPECT_EQ(cuda::split_k_slices(8192, 64, 2048, sms), 4);   // fine: logits [T, E] over H
  EXPECT_EQ(cuda::split_k_slices(2048, 64, 8192, sms), 16);  // fine: the gate's gradient [H, E] over T
  EXPECT_EQ(cuda::split_k_slices(4096, 64, 7168, sms), 8);   // DeepSeek-like logits
  EXPECT_EQ(cuda::split_k_slices(8192, 8, 4096, sms), 4);    // Mixtral-like logits
  EXPECT_EQ(cuda::split_k_slices(4096, 8, 1024, sms), 2);    // mid: K allows only 2 slices of 512
  EXPECT_EQ(cuda::split_k_slices(8192, 1, 2048, sms), 4);    // a shared expert's gate logit
  EXPECT_EQ(cuda::split_k_slices(8192, 2048, 1024, sms), 1); // an expert's product fills the GPU
  EXPECT_EQ(cuda::split_k_slices(8192, 64, 64, sms), 1);     // the router's dx: K = E
  EXPECT_EQ(cuda::split_k_slices(4096, 8, 1000, sms), 1);    // 2 slices of 500: too shallow
  EXPECT_EQ(cuda::split_k_slices(4096, 8, 4100, sms), 1);    // 2 of 2 050: not a multiple of 4
  EXPECT_EQ(cuda::split_k_slices(4096, 64, 7168, 0), 1);     // no multiprocessors known
  // Every answer over random shapes keeps the rules.
  std::mt19937 random(9);
  for (int trial = 0; trial < 2000; ++trial) {
    const std::int64_t m = 1 + random() % 20000, n = 1 + random() % 300, k = 1 + random() % 20000;
    const int gpu = 1 + static_cast<int>(random() % 200);
    const int slices = cuda::split_k_slices(m, n, k, gpu);
    SCOPED_TRACE(::testing::Message() << m << "x" << n << "x" << k << " on " << gpu << ": " << slices);
    ASSERT_GE(slices, 1);
    ASSERT_LE(slices, cuda::kSplitKMaxSlices);
    EXPECT_EQ(slices & (slices - 1), 0);  // a power of two
    if (slices == 1) continue;
    EXPECT_EQ(k % slices, 0);
    EXPECT_EQ(k / slices % 4, 0);
    EXPECT_GE(k / slices, cuda::kSplitKMinDepth);
    EXPECT_LT(((m + 127) / 128) * ((n + 63) / 64) * (slices / 2), gpu);  // half as many would not fill it
    EXPECT_LE(slices * m * n, cuda::split_k_partials_bound(gpu));        // the scratch sized once holds it
  }
}

TEST(CudaSharedLogic, SplitKSlicesAddUpToTheProduct) {
  // Each slice's product taken where split_k_strides puts it (as the strided-batched
  // launch reads it), summed by split_k_element, against the float64 definition
  // alpha · op(A) · op(B) + beta · C, for every transpose, with padded leading
  // dimensions; C holds NaN where beta = 0, which must not be read.
  const std::int64_t m = 7, n = 5, k = 48;
  const float alpha = 1.5f;
  for (const int slices : {1, 2, 4, 8})
    for (const bool trans_a : {false, true})
      for (const bool trans_b : {false, true})
        for (const float beta : {0.0f, 0.5f}) {
          SCOPED_TRACE(::testing::Message() << slices << " slices, trans " << trans_a << trans_b << " beta " << beta);
          const std::int64_t lda = (trans_a ? m : k) + 3, ldb = (trans_b ? k : n) + 2, ldc = n + 1;
          std::vector<float> a((trans_a ? k : m) * lda), b((trans_b ? n : k) * ldb), c(m * ldc);
          fill_normal(a.data(), static_cast<std::int64_t>(a.size()), 1.0, 41);
          fill_normal(b.data(), static_cast<std::int64_t>(b.size()), 1.0, 42);
          fill_normal(c.data(), static_cast<std::int64_t>(c.size()), 1.0, 43);
          if (beta == 0.0f) std::fill(c.begin(), c.end(), std::nanf(""));
          const auto op_a = [&](const float* base, std::int64_t i, std::int64_t x) {
            return trans_a ? base[x * lda + i] : base[i * lda + x];
          };
          const auto op_b = [&](const float* base, std::int64_t x, std::int64_t j) {
            return trans_b ? base[j * ldb + x] : base[x * ldb + j];
          };
          const std::int64_t depth = k / slices;
          const cuda::SliceStrides strides = cuda::split_k_strides(trans_a, trans_b, depth, lda, ldb);
          std::vector<float> partials(slices * m * n);
          for (int sl = 0; sl < slices; ++sl)
            for (std::int64_t i = 0; i < m; ++i)
              for (std::int64_t j = 0; j < n; ++j) {
                float sum = 0.0f;
                for (std::int64_t x = 0; x < depth; ++x)
                  sum += op_a(a.data() + sl * strides.a, i, x) * op_b(b.data() + sl * strides.b, x, j);
                partials[(sl * m + i) * n + j] = alpha * sum;
              }
          for (std::int64_t i = 0; i < m; ++i)
            for (std::int64_t j = 0; j < n; ++j) {
              double expected = 0.0;
              for (std::int64_t x = 0; x < k; ++x) expected += double(op_a(a.data(), i, x)) * op_b(b.data(), x, j);
              expected = alpha * expected + (beta == 0.0f ? 0.0 : double(beta) * c[i * ldc + j]);
              const float got = cuda::split_k_element(partials.data(), slices, m, n, i, j, beta, c.data(), ldc);
              EXPECT_NEAR(got, expected, 1e-5 * (1.0 + std::fabs(expected))) << i << "," << j;
            }
        }
}

TEST(CudaSharedLogic, RouterRowsOnePerThread) {
  // The kernels call route_row and router_backward_row once per token, exactly as the
  // CPU ops do; drive them per token and compare with the batched CPU op, for the
  // softmax router and the sigmoid router with groups, bias and scaling.
  const std::int64_t T = 17;
  const int E = 8, k = 3;
  for (const bool sigmoid : {false, true}) {
    moe::kernels::RouterParams p;
    p.num_experts = E, p.top_k = k, p.sigmoid = sigmoid;
    if (sigmoid) p.n_group = 4, p.topk_group = 2, p.scale = 2.5f;
    std::vector<float> logits(T * E), probs(T * E), weights(T * k), lse(T), probs2(T * E), weights2(T * k), bias(E);
    std::vector<std::int32_t> idx(T * k), idx2(T * k);
    fill_normal(logits.data(), T * E, 2.0, 7);
    fill_normal(bias.data(), E, 0.3, 17);
    const float* b = sigmoid ? bias.data() : nullptr;
    cpu->route(logits.data(), T, p, b, probs.data(), idx.data(), weights.data(), lse.data());
    for (std::int64_t t = 0; t < T; ++t) {
      const float l = moe::kernels::route_row(&logits[t * E], p, b, &probs2[t * E], &idx2[t * k], &weights2[t * k]);
      EXPECT_EQ(l, lse[t]);
    }
    EXPECT_EQ(idx2, idx);
    EXPECT_EQ(weights2, weights);
    std::vector<float> dw(T * k), aux(E, 0.01f), d1(T * E), d2(T * E);
    fill_normal(dw.data(), T * k, 1.0, 8);
    const float z = sigmoid ? 0.0f : 0.1f;
    cpu->router_backward(logits.data(), probs.data(), idx.data(), dw.data(), lse.data(), T, p, aux.data(), z,
                         d1.data());
    for (std::int64_t t = 0; t < T; ++t)
      moe::kernels::router_backward_row(&logits[t * E], &probs[t * E], &idx[t * k], &dw[t * k], lse[t], p,
                                        aux.data(), z, &d2[t * E]);
    EXPECT_EQ(d1, d2);
  }
}

TEST(CudaSharedLogic, GluElementsAsTheKernelsRunThem) {
  const std::int64_t n = 5, F = 7;
  std::vector<float> z(n * 2 * F), dh(n * F), h1(n * F), h2(n * F), dz1(n * 2 * F), dz2(n * 2 * F);
  fill_normal(z.data(), z.size(), 1.0, 20);
  fill_normal(dh.data(), dh.size(), 1.0, 21);
  cpu->glu(z.data(), n, F, moe::kernels::Act::SiLU, h1.data());
  cpu->glu_backward(z.data(), dh.data(), n, F, moe::kernels::Act::SiLU, dz1.data());
  for (std::int64_t i = 0; i < n * F; ++i) {
    h2[i] = moe::kernels::glu_element(z.data(), F, moe::kernels::Act::SiLU, i);
    moe::kernels::glu_backward_element(z.data(), dh.data(), F, moe::kernels::Act::SiLU, i, dz2.data());
  }
  // The CPU's SiLU uses its vectorised exp (kernels/cpu/fast_math.hpp), within 2 ulp of
  // expf, so the two agree to float32 rounding, not bit for bit.
  EXPECT_LE(moe::testing::relative_error(h1.data(), h2.data(), n * F), 1e-6);
  EXPECT_LE(moe::testing::relative_error(dz1.data(), dz2.data(), n * 2 * F), 1e-6);
}

TEST(CudaSharedLogic, OptimizerElementsAsTheKernelsRunThem) {
  const std::int64_t n = 50;
  std::vector<float> p(n), g(n), m(n, 0.1f), v(n, 0.2f);
  fill_normal(p.data(), n, 1.0, 9);
  fill_normal(g.data(), n, 1.0, 10);
  std::vector<float> p2 = p, m2 = m, v2 = v;
  cpu->adamw_update(p.data(), g.data(), m.data(), v.data(), n, 0.01f, 0.9f, 0.99f, 1e-8f, 0.1f, 0.1f, 0.01f);
  for (std::int64_t i = 0; i < n; ++i)
    moe::kernels::adamw_element(p2[i], g[i], m2[i], v2[i], 0.01f, 0.9f, 0.99f, 1e-8f, 0.1f, 0.1f, 0.01f);
  EXPECT_EQ(p, p2);
  EXPECT_EQ(m, m2);
  EXPECT_EQ(v, v2);
}

// resident_gemm.cu's blocks emulated on the host with the kernel's own index arithmetic
// (resident_gemm.cuh): the groups' tile starts, each block's tile (a search in them;
// the grid as the launch sizes it), each block's staged A and B pieces (zeros where
// a_source or b_source finds nothing), each warp's 16 × 16 fragments where a_fragment,
// b_fragment and c_fragment place them, and the output pieces where c_target says.
// The stages and the output tile start as NaN, so a fragment that read past what was
// staged (the rows' padding, another warp's place) would show. Against float64, with
// empty groups (first and last too), one-row groups, groups past a 64-row tile, and
// widths with tails in K and N (multiples of 8 below and past the tiles); K whole or
// split into 2, 3 or 5 slices (k_tiles_of_slice; some slices empty where K has fewer
// tiles), each slice's partial sums then added in slice order as the sum kernel adds
// them; every element of C written exactly once by each slice.
TEST(CudaSharedLogic, ResidentGroupedGemmTilesAgainstFloat64) {
  namespace r = cuda::resident;
  std::mt19937 rng(5);
  const double nan = std::nan("");
  for (int round = 0; round < 24; ++round) {
    const int groups = 1 + static_cast<int>(rng() % 20);
    std::vector<std::int64_t> offsets = {0};
    for (int g = 0; g < groups; ++g) {
      const std::uint32_t kind = rng() % 4;
      offsets.push_back(offsets.back() + (kind == 0 ? 0 : kind == 1 ? 1 : static_cast<std::int64_t>(rng() % 150)));
    }
    const std::int64_t rows = offsets.back();
    const int k = 8 * (1 + static_cast<int>(rng() % 24)), n = 8 * (1 + static_cast<int>(rng() % 12));
    const int slices = std::vector<int>{1, 2, 3, 5}[round % 4];
    SCOPED_TRACE(::testing::Message() << "round " << round << ": " << groups << " groups, " << rows << " rows, k="
                                      << k << " n=" << n << ", " << slices << " slices");
    if (rows == 0) continue;  // the launch does nothing
    std::vector<float> a(static_cast<std::size_t>(rows * k)), b(static_cast<std::size_t>(groups * k * n));
    fill_normal(a.data(), rows * k, 1.0, 10 + round);
    fill_normal(b.data(), groups * k * n, 1.0, 40 + round);
    // The slices' partial sums (one slice: C itself), each element written once a slice.
    std::vector<std::vector<double>> partial(static_cast<std::size_t>(slices),
                                             std::vector<double>(static_cast<std::size_t>(rows * n), nan));
    std::vector<int> written(static_cast<std::size_t>(rows * n), 0);
    std::vector<std::int64_t> starts(offsets.size());
    cuda::resident_tile_starts(offsets.data(), groups, starts.data());
    EXPECT_LE(starts.back(), cuda::resident_row_tile_bound(rows, groups));
    for (int z = 0; z < slices; ++z)
      for (std::int64_t x = 0; x < cuda::resident_row_tile_bound(rows, groups); ++x) {
        const r::RowTile tile = r::row_tile(offsets.data(), starts.data(), groups, x);
        if (tile.rows == 0) continue;
        const float* bg = b.data() + tile.group * k * n;
        for (int n0 = 0; n0 < n; n0 += r::kTileN) {
          std::vector<double> acc(4 * 2 * 2 * r::kFrag * r::kFrag, 0.0);  // [warp][i][j][16][16]
          auto acc_at = [&](int warp, int i, int j, int m, int l) -> double& {
            return acc[static_cast<std::size_t>((((warp * 2 + i) * 2 + j) * r::kFrag + m) * r::kFrag + l)];
          };
          // The slice's k tiles through the ring of stages in one buffer, in the kernel's
          // order: the first kStages - 1 staged, then before step i computes, step
          // i + kStages - 1 staged into the stage step i - 1 used.
          const r::KTiles mine = r::k_tiles_of_slice(k, slices, z);
          const int steps = mine.end - mine.begin;
          std::vector<double> staged(r::kStagedElements, nan);
          auto stage = [&](int step, int s) {
            const int k0 = (mine.begin + step) * r::kTileK;
            for (int p = 0; p < r::kTileM * r::kTileK / 8; ++p) {
              const r::Piece q = r::piece_of(p, r::kTileK);
              const std::int64_t from = r::a_source(q, tile.first, tile.rows, k0, k);
              for (int e = 0; e < 8; ++e)
                staged[r::stage_a(s) + q.row * r::kLdA + q.col + e] = from < 0 ? 0.0 : a[from + e];
            }
            for (int p = 0; p < r::kTileK * r::kTileN / 8; ++p) {
              const r::Piece q = r::piece_of(p, r::kTileN);
              const std::int64_t from = r::b_source(q, k0, n0, k, n);
              for (int e = 0; e < 8; ++e)
                staged[r::stage_b(s) + q.row * r::kLdB + q.col + e] = from < 0 ? 0.0 : bg[from + e];
            }
          };
          for (int s = 0; s < r::kStages - 1 && s < steps; ++s) stage(s, s);
          for (int step = 0; step < steps; ++step) {
            if (step + r::kStages - 1 < steps) stage(step + r::kStages - 1, (step + r::kStages - 1) % r::kStages);
            const double* sa = staged.data() + r::stage_a(step % r::kStages);
            const double* sb = staged.data() + r::stage_b(step % r::kStages);
            for (int warp = 0; warp < r::kThreads / 32; ++warp)
              for (int kk = 0; kk < r::kTileK; kk += r::kFrag)
                for (int i = 0; i < 2; ++i)
                  for (int j = 0; j < 2; ++j)
                    for (int m = 0; m < r::kFrag; ++m)
                      for (int l = 0; l < r::kFrag; ++l)
                        for (int h = 0; h < r::kFrag; ++h)
                          acc_at(warp, i, j, m, l) += sa[r::a_fragment(warp, i, kk) + m * r::kLdA + h] *
                                                      sb[r::b_fragment(warp, j, kk) + h * r::kLdB + l];
          }
          std::vector<double> out(r::kTileM * r::kLdC, nan);
          for (int warp = 0; warp < r::kThreads / 32; ++warp)
            for (int i = 0; i < 2; ++i)
              for (int j = 0; j < 2; ++j)
                for (int m = 0; m < r::kFrag; ++m)
                  for (int l = 0; l < r::kFrag; ++l)
                    out[r::c_fragment(warp, i, j) + m * r::kLdC + l] = acc_at(warp, i, j, m, l);
          for (int p = 0; p < r::kTileM * r::kTileN / 8; ++p) {
            const r::Piece q = r::piece_of(p, r::kTileN);
            const std::int64_t to = r::c_target(q, tile.first, tile.rows, n0, n);
            if (to < 0) continue;
            for (int e = 0; e < 8; ++e) {
              partial[static_cast<std::size_t>(z)][static_cast<std::size_t>(to + e)] = out[q.row * r::kLdC + q.col + e];
              ++written[static_cast<std::size_t>(to + e)];
            }
          }
        }
      }
    EXPECT_TRUE(std::all_of(written.begin(), written.end(), [&](int w) { return w == slices; }));
    std::vector<double> c = partial[0];
    for (int z = 1; z < slices; ++z)
      for (std::size_t i = 0; i < c.size(); ++i) c[i] += partial[static_cast<std::size_t>(z)][i];
    // The slices cover K's tiles once, in order.
    for (int z = 0, next = 0; z < slices; ++z) {
      const r::KTiles mine = r::k_tiles_of_slice(k, slices, z);
      EXPECT_EQ(mine.begin, next) << "slice " << z;
      EXPECT_LE(mine.begin, mine.end) << "slice " << z;
      next = mine.end;
      if (z == slices - 1) EXPECT_EQ(next, (k + r::kTileK - 1) / r::kTileK);
    }
    for (int g = 0; g < groups; ++g)
      for (std::int64_t row = offsets[g]; row < offsets[g + 1]; ++row)
        for (int col = 0; col < n; ++col) {
          double want = 0.0;
          for (int h = 0; h < k; ++h) want += double(a[row * k + h]) * b[(g * k + h) * n + col];
          ASSERT_NEAR(c[static_cast<std::size_t>(row * n + col)], want, 1e-9 * (1.0 + std::fabs(want)))
              << "group " << g << " row " << row << " column " << col;
        }
  }
}

// The ring of stages in the kernel's shared memory (stage_a, stage_b): every stage's A
// and B tiles apart from the others' (a stage written over another while the tensor
// cores read it is a race, which racecheck found on the H200 on 2026-11-28 when B began
// two A stages in, not four), inside kStagedElements, and 32-byte aligned as WMMA's
// fragment loads want.
TEST(CudaSharedLogic, ResidentStagesTakeApartPlacesInSharedMemory) {
  namespace r = cuda::resident;
  struct Place {
    int begin, end;
  };
  std::vector<Place> places;
  for (int s = 0; s < r::kStages; ++s) {
    places.push_back({r::stage_a(s), r::stage_a(s) + r::kStageA});
    places.push_back({r::stage_b(s), r::stage_b(s) + r::kStageB});
  }
  for (std::size_t i = 0; i < places.size(); ++i) {
    EXPECT_GE(places[i].begin, 0) << "place " << i;
    EXPECT_LE(places[i].end, r::kStagedElements) << "place " << i;
    EXPECT_EQ(places[i].begin * 2 % 32, 0) << "place " << i;
    for (std::size_t j = i + 1; j < places.size(); ++j)
      EXPECT_TRUE(places[i].end <= places[j].begin || places[j].end <= places[i].begin)
          << "places " << i << " [" << places[i].begin << ", " << places[i].end << ") and " << j << " ["
          << places[j].begin << ", " << places[j].end << ")";
  }
}

// How many slices of K the resident products take (resident_k_slices): none where the
// rows' fewest tiles fill the GPU (a prefill's thousands of rows); at a decoding
// step's rows, enough slices that the tiles do, each slice at least 4 tiles of K; and
// the partial sums never more than the scratch's bound, whatever the shape.
TEST(CudaSharedLogic, ResidentProductsSplitKOnlyWhereTheirTilesLeaveTheGpuIdle) {
  const int sms = 132;
  const std::int64_t bound = cuda::split_k_partials_bound(sms);
  // Mid, 4 096 tokens (8 192 rows): 128 row tiles fill 132 SMs with any n of 64 or more.
  EXPECT_EQ(cuda::resident_k_slices(8192, 1024, 4096, sms, bound), 1);
  EXPECT_EQ(cuda::resident_k_slices(8192, 4096, 1024, sms, bound), 1);
  // Mid, 8 tokens (16 rows): the second product's 16 tiles over K = 4 096 split 16 ways
  // (the most); the first's 64 tiles over K = 1 024 split 4 ways (2 make 128 tiles, short of 132).
  EXPECT_EQ(cuda::resident_k_slices(16, 1024, 4096, sms, bound), 16);
  EXPECT_EQ(cuda::resident_k_slices(16, 4096, 1024, sms, bound), 4);
  // K too shallow to split: 2 tiles of 32.
  EXPECT_EQ(cuda::resident_k_slices(16, 64, 64, sms, bound), 1);
  // DeepSeek-like, 64 tokens (512 rows): 8 row tiles × 64 or 112 column tiles fill it.
  EXPECT_EQ(cuda::resident_k_slices(512, 4096, 7168, sms, bound), 1);
  std::mt19937 rng(3);
  for (int round = 0; round < 2000; ++round) {
    const std::int64_t rows = 1 + rng() % 20000;
    const int n = 8 * (1 + static_cast<int>(rng() % 2048)), k = 8 * (1 + static_cast<int>(rng() % 2048));
    const int slices = cuda::resident_k_slices(rows, n, k, sms, bound);
    SCOPED_TRACE(::testing::Message() << rows << " rows, n=" << n << " k=" << k << ": " << slices << " slices");
    ASSERT_GE(slices, 1);
    ASSERT_LE(slices, cuda::kResidentMaxSlices);
    ASSERT_LE(slices * rows * n, slices == 1 ? slices * rows * n : bound);
    if (slices > 1) ASSERT_GE((k + 31) / 32 / slices, cuda::kResidentMinKTilesPerSlice);
  }
}

// MOE_PLAN_IN_ONE_KERNEL's three cases, and a value that is none of them named in the
// error with what each case does.
TEST(CudaSharedLogic, PlansInOneKernelFromTheEnvironment) {
  struct Case {
    const char* value;  // "": unset
    bool single_rank, distributed;
  };
  for (const Case& c : {Case{"", true, false}, Case{"1", true, true}, Case{"0", false, false}}) {
    SCOPED_TRACE(*c.value ? c.value : "unset");
    const moe::testing::ScopedEnvironment variable("MOE_PLAN_IN_ONE_KERNEL", c.value);
    const cuda::PlansInOneKernel plans = cuda::plans_in_one_kernel_from_environment();
    EXPECT_EQ(plans.single_rank, c.single_rank);
    EXPECT_EQ(plans.distributed, c.distributed);
  }
  for (const char* wrong : {"yes", "2", "1 "}) {
    const moe::testing::ScopedEnvironment variable("MOE_PLAN_IN_ONE_KERNEL", wrong);
    const std::string named = std::string("MOE_PLAN_IN_ONE_KERNEL = '") + wrong + "'";
    EXPECT_MOE_ERROR(cuda::plans_in_one_kernel_from_environment(), named.c_str(),
                     "expected 1 (every dispatch plan's", "0 (a kernel per step)",
                     "unset (the single-rank plan in one kernel");
  }
}

}  // namespace
