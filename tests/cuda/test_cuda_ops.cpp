// Every CUDA op against the CPU op on the same random inputs (docs/design.md §4: each kernel
// has a CPU reference and a test with a stated tolerance). Normwise relative error:
// 1e-5 in FP32; 5e-3 with TF32 tensor cores; 3e-2 with BF16 inputs. Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "buffer.hpp"
#include "kernels/cuda/reductions.cuh"
#include "kernels/ops.hpp"
#include "moe/error.hpp"
#include "support/expert_reference.hpp"
#include "support/test_util.hpp"

using moe::Buffer;
using moe::kernels::Act;
using moe::kernels::GemmPrecision;
using moe::testing::fill_normal;
using moe::testing::relative_error;

namespace {

// The experts' hidden width the tests pair with a hidden width H: both take the
// element-wise kernels' 8-a-thread path (64, 96), the 4-a-thread path (36, 44) or
// neither (30, 50).
std::int64_t expert_width(std::int64_t H) { return H == 64 ? 96 : H == 36 ? 44 : 50; }

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (moe::kernels::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
    gpu = moe::kernels::make_cuda_ops(0, GemmPrecision::FP32);
  }
  template <class T>
  Buffer<T> device(const std::vector<T>& host, moe::kernels::Ops* ops = nullptr) {
    Buffer<T> b(ops ? *ops : *gpu);
    b.upload(host);
    return b;
  }
  template <class T>
  Buffer<T> device_zeros(std::size_t n, moe::kernels::Ops* ops = nullptr) {
    Buffer<T> b(ops ? *ops : *gpu);
    b.resize(n);
    b.zero();
    return b;
  }
  static std::vector<float> random(std::int64_t n, std::uint64_t seed, double stddev = 1.0) {
    std::vector<float> v(static_cast<std::size_t>(n));
    fill_normal(v.data(), n, stddev, seed);
    return v;
  }
  // bf16 CUDA ops made with `variable` set to `value` ("": unset), which they read then.
  static std::unique_ptr<moe::kernels::Ops> bf16_ops_with(const char* variable, const char* value) {
    const moe::testing::ScopedEnvironment environment(variable, value);
    return moe::kernels::make_cuda_ops(0, GemmPrecision::BF16);
  }
  // Building the CUDA ops with `variable` set to `value` is an error naming both.
  static void expect_environment_error(const char* variable, const char* value) {
    const moe::testing::ScopedEnvironment environment(variable, value);
    try {
      moe::kernels::make_cuda_ops(0, GemmPrecision::BF16);
      ADD_FAILURE() << variable << "=" << value << " was accepted";
    } catch (const moe::Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string(variable) + " = '" + value + "'"), std::string::npos)
          << e.what();
    }
  }
  // Random experts and input rows, on the host (for the float64 reference) and on the
  // device, with a batch over each: `offsets` rows in groups, H wide in, F wide
  // (2F for glu) hidden, biases when asked. Seeds from `seed`.
  struct RandomExperts {
    std::vector<float> x, w_in, b_in, w_out, b_out;
    Buffer<float> dx, dw_in, db_in, dw_out, db_out;
    moe::kernels::ExpertBatch host, dev;
  };
  RandomExperts random_experts(moe::kernels::Ops* ops, const std::vector<std::int64_t>& offsets, std::int64_t H,
                               std::int64_t F, bool gated, Act act, bool with_bias, std::uint64_t seed) {
    const std::int64_t GF = gated ? 2 * F : F, rows = offsets.back();
    const std::size_t groups = offsets.size() - 1;
    const auto G = static_cast<std::int64_t>(groups);
    RandomExperts e{random(rows * H, seed), random(G * H * GF, seed + 1, 0.3), random(G * GF, seed + 2, 0.5),
                    random(G * F * H, seed + 3, 0.2), random(G * H, seed + 4, 0.5)};
    e.dx = device(e.x, ops), e.dw_in = device(e.w_in, ops), e.db_in = device(e.b_in, ops);
    e.dw_out = device(e.w_out, ops), e.db_out = device(e.b_out, ops);
    for (auto* b : {&e.host, &e.dev}) b->row_offsets = offsets, b->in_dim = H, b->width = F, b->gated = gated, b->act = act;
    e.host.x = e.x.data(), e.dev.x = e.dx.data();
    moe::testing::point_at_experts(e.host, groups, e.w_in.data(), e.w_out.data(), with_bias ? e.b_in.data() : nullptr,
                                   with_bias ? e.b_out.data() : nullptr);
    moe::testing::point_at_experts(e.dev, groups, e.dw_in.data(), e.dw_out.data(),
                                   with_bias ? e.db_in.data() : nullptr, with_bias ? e.db_out.data() : nullptr);
    return e;
  }
  // bf16 on the host: round to nearest even (as the GPU's conversions), and back.
  static std::uint16_t bf16_bits(float f) {
    std::uint32_t u = 0;
    std::memcpy(&u, &f, sizeof u);
    if (std::isnan(f)) return static_cast<std::uint16_t>((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<std::uint16_t>(u >> 16);
  }
  static float bf16_value(std::uint16_t bits) {
    const std::uint32_t u = std::uint32_t{bits} << 16;
    float f = 0.0f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
  static std::vector<float> rounded_to_bf16(std::vector<float> v) {
    for (float& x : v) x = bf16_value(bf16_bits(x));
    return v;
  }
  // `count` values from element `first` of a downloaded buffer in the ops' kept form
  // (kernels/ops.hpp): bf16 packed from its start where the ops keep bf16, else float32.
  static std::vector<float> kept_values(const moe::kernels::Ops& ops, const std::vector<float>& buffer,
                                        std::int64_t first, std::int64_t count) {
    std::vector<float> values(static_cast<std::size_t>(count));
    if (!ops.keeps_bf16()) {
      std::copy_n(buffer.begin() + first, count, values.begin());
      return values;
    }
    std::vector<std::uint16_t> bits(static_cast<std::size_t>(count));
    std::memcpy(bits.data(), reinterpret_cast<const char*>(buffer.data()) + 2 * first, 2 * bits.size());
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = bf16_value(bits[i]);
    return values;
  }
  // A device buffer holding `values` (which bf16 must hold exactly) in the kept form.
  Buffer<float> kept_buffer(moe::kernels::Ops& ops, const std::vector<float>& values) {
    if (!ops.keeps_bf16()) return device(values, &ops);
    std::vector<float> packed(ops.kept_floats(values.size()), 0.0f);
    std::vector<std::uint16_t> bits(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) bits[i] = bf16_bits(values[i]);
    std::memcpy(packed.data(), bits.data(), 2 * bits.size());
    return device(packed, &ops);
  }

  std::unique_ptr<moe::kernels::Ops> cpu = moe::kernels::make_cpu_ops();
  std::unique_ptr<moe::kernels::Ops> gpu;
};

TEST_F(CudaOps, GemmAndExpertGemmEveryTransposeInEachPrecision) {
  // gemm() runs in FP32 (or TF32 when asked) in every precision: the router's products
  // stay FP32 in a bf16 layer. expert_gemm() is gemm() but in bf16, where its operands
  // are bf16 and C accumulates in FP32 (the experts' backward products).
  for (GemmPrecision p : {GemmPrecision::FP32, GemmPrecision::TF32, GemmPrecision::BF16}) {
    auto ops = moe::kernels::make_cuda_ops(0, p);
    for (const bool expert : {false, true})
      for (int t = 0; t < 4; ++t) {
        const bool ta = t & 1, tb = t & 2;
        const std::int64_t m = 67, n = 129, k = 45;
        const auto a = random(m * k, 1), b = random(k * n, 2), c0 = random(m * n, 3);
        std::vector<float> expected = c0;
        cpu->gemm(ta, tb, m, n, k, 0.5f, a.data(), ta ? m : k, b.data(), tb ? k : n, 1.0f, expected.data(), n);
        Buffer<float> da = device(a, ops.get()), db = device(b, ops.get()), dc = device(c0, ops.get());
        if (expert)
          ops->expert_gemm(ta, tb, m, n, k, 0.5f, da.data(), ta ? m : k, db.data(), tb ? k : n, 1.0f, dc.data(), n);
        else
          ops->gemm(ta, tb, m, n, k, 0.5f, da.data(), ta ? m : k, db.data(), tb ? k : n, 1.0f, dc.data(), n);
        const double tol = p == GemmPrecision::TF32 ? 5e-3 : p == GemmPrecision::BF16 && expert ? 1e-2 : 1e-5;
        EXPECT_LE(relative_error(dc.download().data(), expected.data(), m * n), tol)
            << (expert ? "expert_gemm" : "gemm") << " trans " << ta << tb << " precision " << int(p);
      }
  }
}

TEST_F(CudaOps, ThinProductsSplitOverKAgainstFloat64) {
  // gemm()'s thin products run split over K (kernels/cuda/split_k.cuh): a [128, 64]
  // output is one tile, so any GPU of two or more multiprocessors splits its K = 8 192
  // 16 ways; the router's logits at the mid config ([4 096, 8] over 1 024) 2 ways on
  // 132. Every transpose, beta 0 (C holds NaN: not read) and 1, against float64 and
  // against the same products unsplit (MOE_GEMM_SPLIT_K=0), within FP32's 1e-5.
  struct Shape {
    std::int64_t m, n, k;
  };
  auto unsplit = [] {
    const moe::testing::ScopedEnvironment split_k("MOE_GEMM_SPLIT_K", "0");
    return moe::kernels::make_cuda_ops(0, GemmPrecision::FP32);
  }();
  for (const Shape& shape : {Shape{128, 64, 8192}, Shape{4096, 8, 1024}, Shape{100, 3, 4096}})
    for (int t = 0; t < 4; ++t)
      for (const float beta : {0.0f, 1.0f}) {
        const bool ta = t & 1, tb = t & 2;
        const std::int64_t m = shape.m, n = shape.n, k = shape.k, lda = ta ? m : k, ldb = tb ? k : n;
        SCOPED_TRACE(::testing::Message() << m << "x" << n << "x" << k << " trans " << ta << tb << " beta " << beta);
        const auto a = random(m * k, 51), b = random(k * n, 52);
        std::vector<float> c0 = random(m * n, 53);
        if (beta == 0.0f) std::fill(c0.begin(), c0.end(), std::nanf(""));
        std::vector<double> expected(static_cast<std::size_t>(m * n));
        for (std::int64_t i = 0; i < m; ++i)
          for (std::int64_t j = 0; j < n; ++j) {
            double sum = 0.0;
            for (std::int64_t x = 0; x < k; ++x)
              sum += double(ta ? a[x * lda + i] : a[i * lda + x]) * (tb ? b[j * ldb + x] : b[x * ldb + j]);
            expected[i * n + j] = 0.5 * sum + (beta == 0.0f ? 0.0 : double(c0[i * n + j]));
          }
        std::vector<float> got[2];
        for (int split = 0; split < 2; ++split) {
          moe::kernels::Ops* ops = split ? gpu.get() : unsplit.get();
          Buffer<float> da = device(a, ops), db = device(b, ops), dc = device(c0, ops);
          ops->gemm(ta, tb, m, n, k, 0.5f, da.data(), lda, db.data(), ldb, beta, dc.data(), n);
          got[split] = dc.download();
          EXPECT_LE(relative_error(got[split].data(), expected.data(), m * n), 1e-5) << (split ? "split" : "unsplit");
        }
        EXPECT_LE(relative_error(got[1].data(), got[0].data(), m * n), 1e-5);
      }
  expect_environment_error("MOE_GEMM_SPLIT_K", "yes");
}

TEST_F(CudaOps, LinearWithBiasAndEveryActivationInEachPrecision) {
  for (GemmPrecision p : {GemmPrecision::FP32, GemmPrecision::TF32, GemmPrecision::BF16}) {
    auto ops = moe::kernels::make_cuda_ops(0, p);
    for (Act act : {Act::Identity, Act::ReLU, Act::GELU, Act::SiLU, Act::GELUTanh}) {
      const std::int64_t n = 77, K = 96, N = 160;
      const auto x = random(n * K, 4), w = random(K * N, 5, 0.1), bias = random(N, 6);
      std::vector<float> pre(n * N), out(n * N);
      cpu->linear(x.data(), n, K, w.data(), N, bias.data(), act, pre.data(), out.data());
      Buffer<float> dx = device(x, ops.get()), dw = device(w, ops.get()), db = device(bias, ops.get());
      Buffer<float> dpre = device_zeros<float>(n * N, ops.get()), dout = device_zeros<float>(n * N, ops.get());
      ops->linear(dx.data(), n, K, dw.data(), N, db.data(), act, dpre.data(), dout.data());
      const double tol = p == GemmPrecision::FP32 ? 1e-5 : p == GemmPrecision::TF32 ? 5e-3 : 3e-2;
      EXPECT_LE(relative_error(dout.download().data(), out.data(), n * N), tol) << int(p) << " act " << int(act);
      EXPECT_LE(relative_error(dpre.download().data(), pre.data(), n * N), tol) << int(p) << " act " << int(act);
    }
  }
}

TEST_F(CudaOps, ExpertFfnAndGroupedLinearInEachPrecisionAgainstFloat64) {
  // Every expert at once (bf16: the fused path of cuda_ops.cu; else grouped_linear, glu,
  // grouped_linear), ffn and glu, with and without biases, a batch that starts past row 0
  // and has an empty group; against the float64 definition. bf16 without a backward
  // leaves pre and hidden alone and gives the same output.
  const std::vector<std::int64_t> offsets = {5, 40, 40, 97, 130};
  const std::int64_t first = offsets.front(), rows = offsets.back(), n = rows - first;
  const std::size_t groups = offsets.size() - 1;
  // Widths that are multiples of 8 take the element-wise kernels' 8-a-thread path, of 4
  // the 4-a-thread one (vector_access.cuh), the others one element a thread.
  for (const std::int64_t H : {64, 36, 30})
    for (GemmPrecision p : {GemmPrecision::FP32, GemmPrecision::TF32, GemmPrecision::BF16}) {
      const std::int64_t F = expert_width(H);
      SCOPED_TRACE(::testing::Message() << "H=" << H << " F=" << F);
      auto ops = moe::kernels::make_cuda_ops(0, p);
      const double tol = p == GemmPrecision::FP32 ? 1e-5 : p == GemmPrecision::TF32 ? 5e-3 : 3e-2;
      for (const char* method : {"one_launch", "per_group"}) {
        // Both ways of launching the grouped products (read per call).
        const moe::testing::ScopedEnvironment grouped("MOE_GROUPED_GEMM", method);
        for (const bool gated : {false, true})
          for (const bool with_bias : {false, true}) {
            const std::int64_t GF = gated ? 2 * F : F;
            RandomExperts e =
                random_experts(ops.get(), offsets, H, F, gated, gated ? Act::SiLU : Act::GELU, with_bias, 31);
            moe::kernels::ExpertBatch& dev = e.dev;
            const moe::testing::ExpertReference ref = moe::testing::reference_expert_ffn(e.host);
            Buffer<float> pre = device_zeros<float>(rows * GF, ops.get()), hidden = device_zeros<float>(rows * F, ops.get()),
                          out = device_zeros<float>(rows * H, ops.get());
            ops->expert_ffn(dev, pre.data(), hidden.data(), out.data());
            const std::string what = std::string(gated ? "glu" : "ffn") + (with_bias ? " bias" : "") + " precision " +
                                     std::to_string(int(p)) + " " + method;
            // pre and hidden for a backward: in the kept form (bf16 in bf16).
            const auto got_pre = kept_values(*ops, pre.download(), first * GF, n * GF),
                       got_hidden = kept_values(*ops, hidden.download(), first * F, n * F);
            const auto got_out = out.download();
            EXPECT_LE(relative_error(got_pre.data(), ref.pre.data(), n * GF), tol) << what;
            EXPECT_LE(relative_error(got_hidden.data(), ref.hidden.data(), n * F), tol) << what;
            EXPECT_LE(relative_error(got_out.data() + first * H, ref.out.data(), n * H), tol) << what;
            if (p == GemmPrecision::BF16) {
              Buffer<float> pre2 = device_zeros<float>(rows * GF, ops.get()),
                            hidden2 = device_zeros<float>(rows * F, ops.get()), out2 = device_zeros<float>(rows * H, ops.get());
              dev.keep_for_backward = false;
              ops->expert_ffn(dev, pre2.data(), hidden2.data(), out2.data());
              EXPECT_EQ(out2.download(), got_out) << what;
            }
            // grouped_linear on its own: the first product with its bias and activation.
            Buffer<float> gl_pre = device_zeros<float>(rows * GF, ops.get()), gl_out = device_zeros<float>(rows * GF, ops.get());
            ops->grouped_linear(e.dx.data(), offsets, H, dev.w_in, GF, dev.b_in, Act::ReLU, gl_pre.data(), gl_out.data());
            std::vector<double> relu(ref.pre.size());
            for (std::size_t i = 0; i < relu.size(); ++i) relu[i] = moe::testing::reference_activation(Act::ReLU, ref.pre[i]);
            EXPECT_LE(relative_error(gl_pre.download().data() + first * GF, ref.pre.data(), n * GF), tol) << what;
            EXPECT_LE(relative_error(gl_out.download().data() + first * GF, relu.data(), n * GF), tol) << what;
          }
      }
    }
}

TEST_F(CudaOps, ResidentGroupedProductsAgainstFloat64) {
  // gather_expert_ffn_combine_resident: each group's rows from offsets on the device,
  // so nothing waits (in bf16, resident_gemm.cuh's products), against the float64
  // definition of the experts gathered and combined on the host, and against the
  // products cuBLAS runs from the host's offsets. Groups: an empty one, one of one row,
  // one of 70 (past a 64-row tile), the last of 76; widths multiples of 8 and not of the
  // 64-wide tiles (tails in K and in N), and an expert width of 1 024, over which the
  // second product's 3 tiles split K 8 ways (resident_k_slices); ffn (ReLU) and glu
  // (SiLU), with and without biases. In float32 the ops take the default, which brings
  // the offsets to the host.
  const std::vector<std::int64_t> offsets = {0, 3, 3, 73, 74, 150};
  const std::int64_t T = 110, rows = offsets.back(), n_out = rows / 2;
  const std::size_t groups = offsets.size() - 1;
  std::vector<std::int32_t> gather(static_cast<std::size_t>(rows)), entry_offsets = {0}, sources;
  for (std::int64_t r = 0; r < rows; ++r) gather[static_cast<std::size_t>(r)] = static_cast<std::int32_t>((r * 37) % T);
  for (std::int64_t t = 0; t < n_out; ++t) {  // two entries a row, each grouped row once (53 is prime to 150)
    sources.push_back(static_cast<std::int32_t>((2 * t * 53) % rows));
    sources.push_back(static_cast<std::int32_t>(((2 * t + 1) * 53) % rows));
    entry_offsets.push_back(static_cast<std::int32_t>(sources.size()));
  }
  const std::vector<float> weights = random(rows, 71, 0.5);
  for (const auto& widths : std::vector<std::pair<std::int64_t, std::int64_t>>{{64, 96}, {40, 56}, {64, 1024}})
    for (GemmPrecision p : {GemmPrecision::BF16, GemmPrecision::FP32})
      for (const bool gated : {false, true})
        for (const bool with_bias : {true, false}) {
          const std::int64_t H = widths.first, F = widths.second;
          SCOPED_TRACE(::testing::Message() << "H=" << H << " F=" << F << " precision " << int(p)
                                            << (gated ? " glu" : " ffn") << (with_bias ? " bias" : ""));
          auto ops = moe::kernels::make_cuda_ops(0, p);
          RandomExperts e = random_experts(ops.get(), offsets, H, F, gated, gated ? Act::SiLU : Act::ReLU,
                                           with_bias, 83);
          EXPECT_EQ(ops->groups_resident(e.dev), p == GemmPrecision::BF16);
          // The float64 reference: the experts on the gathered rows, then the combine.
          const std::vector<float> src = random(T * H, 84);
          std::vector<float> gathered(static_cast<std::size_t>(rows * H));
          for (std::int64_t r = 0; r < rows; ++r)
            for (std::int64_t h = 0; h < H; ++h)
              gathered[static_cast<std::size_t>(r * H + h)] = src[static_cast<std::size_t>(gather[r] * H + h)];
          e.host.x = gathered.data();
          const moe::testing::ExpertReference ref = moe::testing::reference_expert_ffn(e.host);
          std::vector<double> want(static_cast<std::size_t>(n_out * H), 0.0);
          for (std::int64_t t = 0; t < n_out; ++t)
            for (std::int32_t a = entry_offsets[t]; a < entry_offsets[t + 1]; ++a)
              for (std::int64_t h = 0; h < H; ++h)
                want[static_cast<std::size_t>(t * H + h)] += double(weights[a]) * ref.out[sources[a] * H + h];
          Buffer<float> dsrc = device(src, ops.get()), dweights = device(weights, ops.get());
          Buffer<std::int32_t> drows = device(gather, ops.get()), dentries = device(entry_offsets, ops.get()),
                               dsources = device(sources, ops.get());
          Buffer<std::int64_t> doffsets = device(offsets, ops.get());
          e.dev.keep_for_backward = false;
          auto run = [&](bool resident) {
            const std::int64_t GF = gated ? 2 * F : F;
            Buffer<float> scratch_in = device_zeros<float>(rows * H, ops.get()),
                          pre = device_zeros<float>(rows * GF, ops.get()),
                          hidden = device_zeros<float>(rows * F, ops.get()),
                          out = device_zeros<float>(rows * H, ops.get()),
                          combined = device_zeros<float>(n_out * H, ops.get());
            const moe::kernels::CombineInto into{n_out, dentries.data(), dsources.data(), dweights.data(),
                                                 combined.data()};
            if (resident) {
              moe::kernels::ExpertBatch batch = e.dev;
              batch.row_offsets.clear();  // not read: the offsets are on the device
              ops->gather_expert_ffn_combine_resident(dsrc.data(), drows.data(), rows, doffsets.data(),
                                                      scratch_in.data(), batch, pre.data(), hidden.data(), out.data(),
                                                      into);
            } else {
              ops->gather_expert_ffn_combine(dsrc.data(), drows.data(), scratch_in.data(), e.dev, pre.data(),
                                             hidden.data(), out.data(), into);
            }
            return combined.download();
          };
          const std::vector<float> got = run(true), host_offsets = run(false);
          const double tol = p == GemmPrecision::BF16 ? 3e-2 : 1e-5;
          EXPECT_LE(relative_error(got.data(), want.data(), n_out * H), tol);
          EXPECT_LE(relative_error(host_offsets.data(), want.data(), n_out * H), tol);
          EXPECT_LE(relative_error(got.data(), host_offsets.data(), n_out * H), tol);
        }
}

TEST_F(CudaOps, BatchedGroupedGemmsForGroupsOfEqualRows) {
  // MOE_GROUPED_GEMM=batched: groups of one row count (experts padded to the most rows
  // kept) run as one cublasGemmBatchedEx, against the float64 definition, in each
  // precision; groups of unequal rows fall back to the size rule (no error).
  const std::int64_t H = 64, F = expert_width(H), per_group = 33;
  const std::vector<std::int64_t> equal = {7, 7 + per_group, 7 + 2 * per_group, 7 + 3 * per_group, 7 + 4 * per_group},
                                  unequal = {0, 33, 90, 90, 161};
  const moe::testing::ScopedEnvironment grouped("MOE_GROUPED_GEMM", "batched");
  for (const auto& offsets : {equal, unequal})
    for (GemmPrecision p : {GemmPrecision::FP32, GemmPrecision::BF16})
      for (const bool gated : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "precision " << int(p) << (gated ? " glu" : " ffn")
                                          << (offsets == equal ? " equal rows" : " unequal rows"));
        const std::int64_t first = offsets.front(), rows = offsets.back(), n = rows - first, GF = gated ? 2 * F : F;
        const std::size_t groups = offsets.size() - 1;
        auto ops = moe::kernels::make_cuda_ops(0, p);
        const RandomExperts e = random_experts(ops.get(), offsets, H, F, gated, gated ? Act::SiLU : Act::ReLU, true, 51);
        const moe::testing::ExpertReference ref = moe::testing::reference_expert_ffn(e.host);
        Buffer<float> pre = device_zeros<float>(rows * GF, ops.get()), hidden = device_zeros<float>(rows * F, ops.get()),
                      out = device_zeros<float>(rows * H, ops.get());
        ops->expert_ffn(e.dev, pre.data(), hidden.data(), out.data());
        EXPECT_LE(relative_error(out.download().data() + first * H, ref.out.data(), n * H),
                  p == GemmPrecision::BF16 ? 3e-2 : 1e-5);
      }
}

TEST_F(CudaOps, PerGroupGemmsOnSeveralStreamsEqualOneStream) {
  // The per-group GEMMs spread over streams (GemmLanes) compute what they compute on one
  // stream, bit for bit: the same cuBLAS calls, run side by side. Seven groups on three
  // lanes (a lane runs several, one group is empty), ffn and glu, bf16 and fp32; and
  // with MOE_GEMM_SM_SHARE=1, within rounding.
  const std::vector<std::int64_t> offsets = {0, 33, 90, 90, 161, 170, 260, 301};
  const std::int64_t H = 64, F = 80, rows = offsets.back();
  const std::size_t groups = offsets.size() - 1;
  const moe::testing::ScopedEnvironment grouped("MOE_GROUPED_GEMM", "per_group");
  // The experts' output with the GEMM streams the environment asks for (read when the
  // ops are made).
  auto expert_output = [&](GemmPrecision p, bool gated) {
    const std::int64_t GF = gated ? 2 * F : F;
    auto ops = moe::kernels::make_cuda_ops(0, p);
    Buffer<float> dx = device(random(rows * H, 71), ops.get()), dw_in = device(random(groups * H * GF, 72, 0.2), ops.get()),
                  dw_out = device(random(groups * F * H, 73, 0.2), ops.get());
    moe::kernels::ExpertBatch batch;
    batch.row_offsets = offsets, batch.in_dim = H, batch.width = F, batch.gated = gated;
    batch.act = gated ? Act::SiLU : Act::ReLU, batch.x = dx.data();
    moe::testing::point_at_experts(batch, groups, dw_in.data(), dw_out.data());
    Buffer<float> pre = device_zeros<float>(rows * GF, ops.get()), hidden = device_zeros<float>(rows * F, ops.get()),
                  out = device_zeros<float>(rows * H, ops.get());
    ops->expert_ffn(batch, pre.data(), hidden.data(), out.data());
    return out.download();
  };
  for (GemmPrecision p : {GemmPrecision::FP32, GemmPrecision::BF16})
    for (const bool gated : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "precision " << int(p) << (gated ? " glu" : " ffn"));
      const std::vector<float> one_stream = [&] {
        const moe::testing::ScopedEnvironment streams("MOE_GEMM_STREAMS", "1");
        return expert_output(p, gated);
      }();
      const moe::testing::ScopedEnvironment streams("MOE_GEMM_STREAMS", "3");
      EXPECT_EQ(expert_output(p, gated), one_stream);
      // With each lane's handle planning for its share of the SMs, cuBLAS may pick
      // other kernels (another order of the sums): the same products within rounding.
      const moe::testing::ScopedEnvironment share("MOE_GEMM_SM_SHARE", "1");
      EXPECT_LE(relative_error(expert_output(p, gated).data(), one_stream.data(), rows * H),
                p == GemmPrecision::BF16 ? 1e-2 : 1e-5)
          << "MOE_GEMM_SM_SHARE=1";
    }
  expect_environment_error("MOE_GEMM_SM_SHARE", "2");
  for (const char* bad : {"0", "9", "four", "2x"}) expect_environment_error("MOE_GEMM_STREAMS", bad);
}

TEST_F(CudaOps, GatherExpertFfnIsAGatherThenTheFfn) {
  // gather_expert_ffn against gather_rows then expert_ffn on the same ops, bit for bit:
  // in bf16 it gathers straight into bf16 rows, rounding each value as the conversion
  // does, and for a backward keeps them (the kept form: the float32 rows rounded to
  // bf16). A padding row, a row taken twice, a batch from row 3; widths that take the
  // 8- and the 4-a-thread paths and one that takes neither.
  const std::vector<std::int64_t> offsets = {3, 40, 40, 97, 130};
  const std::int64_t T = 90, rows = offsets.back(), first = offsets.front();
  const std::size_t groups = offsets.size() - 1;
  std::vector<std::int32_t> gather(static_cast<std::size_t>(rows), 0);
  for (std::int64_t r = 0; r < rows; ++r) gather[static_cast<std::size_t>(r)] = static_cast<std::int32_t>((r * 37) % T);
  gather[10] = -1, gather[11] = gather[12];
  for (const std::int64_t H : {64, 36, 30})
    for (GemmPrecision p : {GemmPrecision::FP32, GemmPrecision::BF16})
      for (const bool keep : {true, false})
        for (const bool gated : {false, true}) {
          const std::int64_t F = expert_width(H);
          SCOPED_TRACE(::testing::Message() << "H=" << H << " precision " << int(p) << (keep ? " keep" : "")
                                            << (gated ? " glu" : " ffn"));
          const std::int64_t GF = gated ? 2 * F : F;
          auto ops = moe::kernels::make_cuda_ops(0, p);
          Buffer<float> dsrc = device(random(T * H, 81), ops.get()), dw_in = device(random(groups * H * GF, 82, 0.2), ops.get()),
                        db_in = device(random(groups * GF, 83, 0.5), ops.get()),
                        dw_out = device(random(groups * F * H, 84, 0.2), ops.get());
          Buffer<std::int32_t> drows = device(gather, ops.get());
          moe::kernels::ExpertBatch batch;
          batch.row_offsets = offsets, batch.in_dim = H, batch.width = F, batch.gated = gated;
          batch.act = gated ? Act::SiLU : Act::ReLU, batch.keep_for_backward = keep;
          moe::testing::point_at_experts(batch, groups, dw_in.data(), dw_out.data(), db_in.data());
          struct Result {
            std::vector<float> gathered, pre, hidden, out;
          };
          auto run = [&](bool fused) {
            Buffer<float> gathered = device_zeros<float>(rows * H, ops.get()), pre = device_zeros<float>(rows * GF, ops.get()),
                          hidden = device_zeros<float>(rows * F, ops.get()), out = device_zeros<float>(rows * H, ops.get());
            if (fused) {
              ops->gather_expert_ffn(dsrc.data(), drows.data(), gathered.data(), batch, pre.data(), hidden.data(),
                                     out.data());
            } else {
              ops->gather_rows(dsrc.data(), drows.data() + first, rows - first, H, gathered.data() + first * H);
              moe::kernels::ExpertBatch on_gathered = batch;
              on_gathered.x = gathered.data();
              ops->expert_ffn(on_gathered, pre.data(), hidden.data(), out.data());
            }
            return Result{gathered.download(), pre.download(), hidden.download(), out.download()};
          };
          const Result got = run(true), want = run(false);
          EXPECT_EQ(got.out, want.out);
          if (keep || p != GemmPrecision::BF16) {  // bf16 without a backward leaves these unwritten
            // Both kept forms of the same values (pre and hidden), and the kept rows
            // against the float32 rows gathered apart.
            EXPECT_EQ(got.pre, want.pre);
            EXPECT_EQ(got.hidden, want.hidden);
            const std::vector<float> want_rows(want.gathered.begin() + first * H, want.gathered.end());
            EXPECT_EQ(kept_values(*ops, got.gathered, first * H, (rows - first) * H),
                      ops->keeps_bf16() ? rounded_to_bf16(want_rows) : want_rows);
          }
        }
}

TEST_F(CudaOps, GatherExpertFfnCombineIsTheFfnThenTheCombine) {
  // gather_expert_ffn_combine against gather_expert_ffn then combine_rows on the same
  // ops, and for a training forward expert_combine_backward through the outputs it kept
  // against combine_backward on the float32 outputs of gather_expert_ffn. In bf16 it
  // adds the output bias while it combines the bf16 products (and for a backward keeps
  // the bf16 products, whose backward adds the bias as it reads them): the same float
  // operations in the same order, so equal to rounding (1e-6 normwise; ∂L/∂src bit for
  // bit). Output biases on some experts and none on others, an empty expert, an output
  // row with no entry and one with 70 (past the 64 whose biases a block stages), both
  // widths; float32 takes the defaults. Where the ops say they do not use the float32
  // scratch without a backward, it is passed as null.
  const std::vector<std::int64_t> offsets = {0, 40, 40, 97, 130};
  const std::int64_t T = 90, rows = offsets.back(), n_out = 60;
  const std::size_t groups = offsets.size() - 1;
  std::vector<std::int32_t> gather(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) gather[static_cast<std::size_t>(r)] = static_cast<std::int32_t>((r * 37) % T);
  // Entries: row 5 has 70, the others 0-3; each grouped row is the source of at most
  // one entry (as in a plan: the backward writes each source's gradient once).
  std::vector<std::int32_t> entry_offsets = {0}, sources;
  std::vector<float> weights;
  std::int32_t next_source = 0;
  for (std::int64_t r = 0; r < n_out; ++r) {
    const std::int64_t entries = r == 5 ? 70 : r % 4;
    for (std::int64_t i = 0; i < entries && next_source < rows; ++i) {
      sources.push_back(static_cast<std::int32_t>((next_source++ * 53) % rows));  // 53 is prime to 130: distinct
      weights.push_back(0.1f + 0.01f * static_cast<float>(i));
    }
    entry_offsets.push_back(static_cast<std::int32_t>(sources.size()));
  }
  for (const std::int64_t H : {64, 36, 30})
    for (GemmPrecision p : {GemmPrecision::FP32, GemmPrecision::BF16})
      for (const bool keep : {true, false}) {
        const std::int64_t F = expert_width(H);
        SCOPED_TRACE(::testing::Message() << "H=" << H << " precision " << int(p) << (keep ? " keep" : ""));
        auto ops = moe::kernels::make_cuda_ops(0, p);
        Buffer<float> dsrc = device(random(T * H, 91), ops.get()), dw_in = device(random(groups * H * F, 92, 0.2), ops.get()),
                      db_in = device(random(groups * F, 93, 0.5), ops.get()),
                      dw_out = device(random(groups * F * H, 94, 0.2), ops.get()),
                      db_out = device(random(groups * H, 95, 0.5), ops.get()), dweights = device(weights, ops.get()),
                      d_dst = device(random(n_out * H, 96), ops.get());
        Buffer<std::int32_t> drows = device(gather, ops.get()), doffsets = device(entry_offsets, ops.get()),
                             dsources = device(sources, ops.get());
        moe::kernels::ExpertBatch batch;
        batch.row_offsets = offsets, batch.in_dim = H, batch.width = F, batch.act = Act::GELU;
        batch.keep_for_backward = keep;
        moe::testing::point_at_experts(batch, groups, dw_in.data(), dw_out.data(), db_in.data(), db_out.data());
        for (std::size_t g = 1; g < groups; g += 3) batch.b_out[g] = nullptr;  // some experts without an output bias
        struct Result {
          std::vector<float> combined, d_src, d_weights;
        };
        auto run = [&](bool fused) {
          Buffer<float> gathered = device_zeros<float>(rows * H, ops.get()), pre = device_zeros<float>(rows * F, ops.get()),
                        hidden = device_zeros<float>(rows * F, ops.get()), out = device_zeros<float>(rows * H, ops.get()),
                        combined = device_zeros<float>(n_out * H, ops.get()),
                        d_src = device_zeros<float>(rows * H, ops.get()),
                        d_weights = device_zeros<float>(weights.size(), ops.get());
          const moe::kernels::CombineInto into{n_out, doffsets.data(), dsources.data(), dweights.data(), combined.data()};
          if (fused && !keep && !ops->expert_scratch_for_inference()) {  // it promises not to touch them
            ops->gather_expert_ffn_combine(dsrc.data(), drows.data(), nullptr, batch, nullptr, nullptr, nullptr, into);
          } else if (fused) {
            ops->gather_expert_ffn_combine(dsrc.data(), drows.data(), gathered.data(), batch, pre.data(), hidden.data(),
                                           out.data(), into);
            if (keep)
              ops->expert_combine_backward(batch, out.data(), d_dst.data(), into, d_src.data(), d_weights.data());
          } else {
            ops->gather_expert_ffn(dsrc.data(), drows.data(), gathered.data(), batch, pre.data(), hidden.data(),
                                   out.data());
            ops->combine_rows(out.data(), H, n_out, into.offsets, into.sources, into.weights, into.rows_out);
            if (keep)
              ops->combine_backward(d_dst.data(), out.data(), H, n_out, into.offsets, into.sources, into.weights,
                                    d_src.data(), d_weights.data());
          }
          return Result{combined.download(), d_src.download(), d_weights.download()};
        };
        const Result got = run(true), want = run(false);
        EXPECT_LE(relative_error(got.combined.data(), want.combined.data(), n_out * H), 1e-6);
        for (std::int64_t h = 0; h < H; ++h)
          EXPECT_EQ(got.combined[static_cast<std::size_t>(h)], 0.0f) << "row 0 has no entry";
        if (keep) {
          EXPECT_EQ(got.d_src, want.d_src) << "the backward's source rows";
          EXPECT_LE(relative_error(got.d_weights.data(), want.d_weights.data(),
                                   static_cast<std::int64_t>(weights.size())), 1e-6)
              << "the backward's weight gradients";
        }
      }
}

TEST_F(CudaOps, ReluAndBiasInTheFirstProductsEpilogueAsTheKernelComputesThem) {
  // MOE_GEMM_EPILOGUE=1 (epilogue_gemm.cuh): a bf16 inference forward of ReLU ffn experts
  // takes its first product's bias and ReLU in cuBLASLt's epilogue, once its probe has
  // passed (the ops print which; without it the kernel runs and this compares it with
  // itself). Against the ops without it: the hidden is relu(x·W + b) rounded to bf16
  // once where the kernel rounds x·W first, so 1e-2 normwise; a NaN in a token row
  // reaches the same output elements either way (moe's ReLU passes NaN through); a
  // training forward (kept rows) and a glu or GELU batch never take it: the same bits.
  // Row offsets from a group's start at 64 and 96 columns leave rows 128- and 64-byte
  // aligned, below cuBLASLt's default assumption of 256. An empty expert, and experts
  // with and without an input bias.
  const std::vector<std::int64_t> offsets = {0, 40, 40, 97, 130};
  const std::int64_t T = 90, rows = offsets.back(), n_out = T;
  const std::size_t groups = offsets.size() - 1;
  std::vector<std::int32_t> gather(static_cast<std::size_t>(rows)), entry_offsets = {0}, sources;
  std::vector<float> weights;
  for (std::int64_t r = 0; r < rows; ++r) gather[static_cast<std::size_t>(r)] = static_cast<std::int32_t>((r * 37) % T);
  for (std::int64_t t = 0; t < n_out; ++t) {  // output row t sums the grouped rows that read token t
    for (std::int64_t r = 0; r < rows; ++r)
      if (gather[static_cast<std::size_t>(r)] == t)
        sources.push_back(static_cast<std::int32_t>(r)), weights.push_back(0.3f + 0.01f * static_cast<float>(r % 7));
    entry_offsets.push_back(static_cast<std::int32_t>(sources.size()));
  }
  auto with = bf16_ops_with("MOE_GEMM_EPILOGUE", "1"), without = bf16_ops_with("MOE_GEMM_EPILOGUE", "");
  for (const std::int64_t H : {64, 96})
    for (const Act act : {Act::ReLU, Act::GELU})
      for (const bool gated : {false, true})
        for (const bool keep : {false, true}) {
          const std::int64_t F = 96;
          SCOPED_TRACE(::testing::Message() << "H=" << H << " act " << int(act) << (gated ? " glu" : " ffn")
                                            << (keep ? " keep" : ""));
          std::vector<float> src = random(T * H, 101);
          src[static_cast<std::size_t>(7 * H + 3)] = std::nanf("");  // token 7
          auto run = [&](moe::kernels::Ops& ops) {
            const std::int64_t GF = gated ? 2 * F : F;
            Buffer<float> dsrc = device(src, &ops), dw_in = device(random(groups * H * GF, 102, 0.2), &ops),
                          db_in = device(random(groups * GF, 103, 0.5), &ops),
                          dw_out = device(random(groups * F * H, 104, 0.2), &ops),
                          db_out = device(random(groups * H, 105, 0.5), &ops), dweights = device(weights, &ops),
                          gathered = device_zeros<float>(rows * H, &ops), pre = device_zeros<float>(rows * GF, &ops),
                          hidden = device_zeros<float>(rows * F, &ops), out = device_zeros<float>(rows * H, &ops),
                          combined = device_zeros<float>(n_out * H, &ops);
            Buffer<std::int32_t> drows = device(gather, &ops), doffsets = device(entry_offsets, &ops),
                                 dsources = device(sources, &ops);
            moe::kernels::ExpertBatch batch;
            batch.row_offsets = offsets, batch.in_dim = H, batch.width = F, batch.act = act, batch.gated = gated;
            batch.keep_for_backward = keep;
            moe::testing::point_at_experts(batch, groups, dw_in.data(), dw_out.data(), db_in.data(), db_out.data());
            batch.b_in[3] = nullptr;  // an expert without an input bias
            ops.gather_expert_ffn_combine(dsrc.data(), drows.data(), gathered.data(), batch, pre.data(), hidden.data(),
                                          out.data(),
                                          {n_out, doffsets.data(), dsources.data(), dweights.data(), combined.data()});
            return combined.download();
          };
          std::vector<float> got = run(*with), want = run(*without);
          if (keep || gated || act != Act::ReLU) {
            EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float))) << "not the epilogue's case";
            continue;
          }
          std::int64_t nans = 0;
          for (std::size_t i = 0; i < got.size(); ++i) {
            ASSERT_EQ(std::isnan(got[i]), std::isnan(want[i])) << "element " << i;
            if (std::isnan(got[i])) got[i] = want[i] = 0.0f, ++nans;
          }
          EXPECT_EQ(nans, H) << "token 7's output row, and only it, is NaN";
          EXPECT_LE(relative_error(got.data(), want.data(), n_out * H), 1e-2);
        }
  expect_environment_error("MOE_GEMM_EPILOGUE", "on");
}

TEST_F(CudaOps, ExpertBackwardOnTheLanesEqualsTheBackwardPerGroup) {
  // The CUDA override of expert_ffn_backward (the element-wise work and the bias sums
  // one pass each over every group, the groups' products on the GEMM lanes: three
  // non-empty groups here, on three streams) against the default on the same ops (each
  // group's expert_gemm calls one after another), in float32 and bf16. In bf16 the
  // override takes the kept bf16 rows as operands, converts ∂L/∂y once and writes ∂L/∂z
  // in bf16, where the default runs on float32 copies of the same values and converts
  // each operand per product: the same bf16 operands into the same products. So equal up
  // to cuBLAS choosing another kernel for another alignment (1e-5 normwise); except
  // that in bf16 the input biases' gradients sum the bf16 ∂L/∂z where the default sums
  // it in float32: within bf16's unit roundoff (2⁻⁸, 4e-3 normwise). The input rows
  // kept (a routed expert's) and float32 (the shared expert's); biases on some groups or
  // on none; an empty group, a batch from row 3, ffn and glu, dx over dy and apart.
  const std::vector<std::int64_t> offsets = {3, 40, 40, 97, 130};
  const std::int64_t rows = offsets.back();
  const std::size_t groups = offsets.size() - 1;
  // One ops a precision for every case (each case frees its buffers before the next):
  // making cuBLAS handles and GEMM lanes per case would cost the sanitizers' runs, as
  // would cases that test nothing new: in float32 the kept form is float32 (x_kept
  // changes nothing) and the element-wise kernels take one element a thread at every
  // width, so it runs two widths with the rows kept.
  const std::unique_ptr<moe::kernels::Ops> bf16_ops = moe::kernels::make_cuda_ops(0, GemmPrecision::BF16),
                                           fp32_ops = moe::kernels::make_cuda_ops(0, GemmPrecision::FP32);
  for (GemmPrecision p : {GemmPrecision::BF16, GemmPrecision::FP32})
    for (const std::int64_t H : {64, 36, 30})
      for (const bool gated : {false, true})
        for (const bool in_place : {true, false})
          for (const bool x_kept : {true, false})
            for (const bool with_bias : {true, false}) {
              if (p == GemmPrecision::FP32 && (!x_kept || H == 36)) continue;
              const std::int64_t F = expert_width(H), GF = gated ? 2 * F : F;
              SCOPED_TRACE(::testing::Message() << "precision " << int(p) << " H=" << H << (gated ? " glu" : " ffn")
                                                << (in_place ? " dx over dy" : "") << (x_kept ? " kept x" : " float x")
                                                << (with_bias ? " biases" : ""));
              moe::kernels::Ops* ops = p == GemmPrecision::BF16 ? bf16_ops.get() : fp32_ops.get();
              // What a forward keeps: values bf16 holds exactly, in the kept form for the
              // override and as float32 for the default.
              const std::vector<float> x_values = rounded_to_bf16(random(rows * H, 61)),
                                       pre_values = rounded_to_bf16(random(rows * GF, 62)),
                                       hidden_values = rounded_to_bf16(random(rows * F, 63));
              Buffer<float> x = device(x_values, ops), pre = device(pre_values, ops),
                            hidden = device(hidden_values, ops), x16 = kept_buffer(*ops, x_values),
                            pre16 = kept_buffer(*ops, pre_values), hidden16 = kept_buffer(*ops, hidden_values),
                            w_in = device(random(groups * H * GF, 64, 0.2), ops),
                            w_out = device(random(groups * F * H, 65, 0.2), ops);
              moe::kernels::ExpertBatch batch;
              batch.row_offsets = offsets, batch.in_dim = H, batch.width = F, batch.gated = gated;
              batch.act = gated ? Act::SiLU : Act::GELU;
              moe::testing::point_at_experts(batch, groups, w_in.data(), w_out.data());
              struct Result {
                std::vector<float> dx, w_in, b_in, w_out, b_out;
              };
              auto run = [&](bool batched) {
                Buffer<float> dy = device(random(rows * H, 66), ops),
                              dx = device_zeros<float>(rows * H, ops),
                              d_hidden = device_zeros<float>(rows * F, ops),
                              d_pre = device_zeros<float>(rows * GF, ops),
                              gw_in = device(random(groups * H * GF, 67), ops),
                              gb_in = device(random(groups * GF, 68), ops),
                              gw_out = device(random(groups * F * H, 69), ops),
                              gb_out = device(random(groups * H, 70), ops);
                moe::kernels::ExpertBatchGradients grads;
                for (std::size_t g = 0; g < groups; ++g) {
                  grads.w_in.push_back(gw_in.data() + g * H * GF), grads.w_out.push_back(gw_out.data() + g * F * H);
                  grads.b_in.push_back(with_bias && g % 2 ? gb_in.data() + g * GF : nullptr);
                  grads.b_out.push_back(with_bias && g % 2 ? gb_out.data() + g * H : nullptr);
                }
                float* dx_target = in_place ? dy.data() : dx.data();
                moe::kernels::ExpertBatch b = batch;
                if (batched) {
                  b.x = x_kept ? x16.data() : x.data(), b.x_kept = x_kept;
                  ops->expert_ffn_backward(b, pre16.data(), hidden16.data(), dy.data(), grads, d_hidden.data(),
                                           d_pre.data(), dx_target);
                } else {
                  b.x = x.data();
                  ops->moe::kernels::Ops::expert_ffn_backward(b, pre.data(), hidden.data(), dy.data(), grads,
                                                              d_hidden.data(), d_pre.data(), dx_target);
                }
                std::vector<float> dx_rows = in_place ? dy.download() : dx.download();
                // The rows before the batch's first are not its.
                dx_rows.erase(dx_rows.begin(), dx_rows.begin() + offsets.front() * H);
                return Result{dx_rows, gw_in.download(), gb_in.download(), gw_out.download(), gb_out.download()};
              };
              const Result got = run(true), want = run(false);
              auto close = [](const std::vector<float>& a, const std::vector<float>& b) {
                return relative_error(a.data(), b.data(), static_cast<std::int64_t>(a.size()));
              };
              EXPECT_LE(close(got.dx, want.dx), 1e-5) << "dx";
              EXPECT_LE(close(got.w_in, want.w_in), 1e-5) << "w_in";
              EXPECT_LE(close(got.b_in, want.b_in), p == GemmPrecision::BF16 ? 4e-3 : 1e-5) << "b_in";
              EXPECT_LE(close(got.w_out, want.w_out), 1e-5) << "w_out";
              EXPECT_LE(close(got.b_out, want.b_out), 1e-5) << "b_out";
            }
}

TEST_F(CudaOps, BiasGradientSumsInTheEpilogueAreTheSeparatePassBitForBit) {
  // MOE_BIAS_GRADIENT_SUMS_IN_EPILOGUE=1 sums the input biases' gradients as the hidden
  // epilogue's backward writes the bf16 ∂L/∂z (launch_expert_hidden_backward_with_sums),
  // where by default a second pass reads ∂L/∂z back: the same rounded values added in
  // the same order, so every gradient must be the same bits. Groups past one chunk of
  // 256 rows and an empty one, hidden widths taken 8, 4 and 1 at a time (96, 44, 50),
  // ffn and glu; and with a group without a bias, where the sums cannot cover every row
  // and the separate pass runs either way.
  const std::vector<std::int64_t> offsets = {3, 40, 40, 400, 700};
  const std::int64_t rows = offsets.back();
  const std::size_t groups = offsets.size() - 1;
  const std::unique_ptr<moe::kernels::Ops> fused = bf16_ops_with("MOE_BIAS_GRADIENT_SUMS_IN_EPILOGUE", "1"),
                                           separate = bf16_ops_with("MOE_BIAS_GRADIENT_SUMS_IN_EPILOGUE", "");
  for (const std::int64_t H : {64, 36, 30})
    for (const bool gated : {false, true})
      for (const bool every_bias : {true, false}) {
        const std::int64_t F = expert_width(H), GF = gated ? 2 * F : F;
        SCOPED_TRACE(::testing::Message() << "H=" << H << " F=" << F << (gated ? " glu" : " ffn")
                                          << (every_bias ? "" : ", a group without a bias"));
        const std::vector<float> x_values = rounded_to_bf16(random(rows * H, 71)),
                                 pre_values = rounded_to_bf16(random(rows * GF, 72)),
                                 hidden_values = rounded_to_bf16(random(rows * F, 73));
        auto run = [&](moe::kernels::Ops& ops) {
          Buffer<float> x16 = kept_buffer(ops, x_values), pre16 = kept_buffer(ops, pre_values),
                        hidden16 = kept_buffer(ops, hidden_values),
                        w_in = device(random(groups * H * GF, 74, 0.2), &ops),
                        w_out = device(random(groups * F * H, 75, 0.2), &ops), dy = device(random(rows * H, 76), &ops),
                        d_hidden = device_zeros<float>(rows * F, &ops), d_pre = device_zeros<float>(rows * GF, &ops),
                        gw_in = device(random(groups * H * GF, 77), &ops), gb_in = device(random(groups * GF, 78), &ops),
                        gw_out = device(random(groups * F * H, 79), &ops), gb_out = device(random(groups * H, 80), &ops);
          moe::kernels::ExpertBatch batch;
          batch.row_offsets = offsets, batch.in_dim = H, batch.width = F, batch.gated = gated;
          batch.act = gated ? Act::SiLU : Act::GELU;
          batch.x = x16.data(), batch.x_kept = true;
          moe::testing::point_at_experts(batch, groups, w_in.data(), w_out.data());
          moe::kernels::ExpertBatchGradients grads;
          for (std::size_t g = 0; g < groups; ++g) {
            grads.w_in.push_back(gw_in.data() + g * H * GF), grads.w_out.push_back(gw_out.data() + g * F * H);
            grads.b_in.push_back(every_bias || g != 2 ? gb_in.data() + g * GF : nullptr);
            grads.b_out.push_back(gb_out.data() + g * H);
          }
          ops.expert_ffn_backward(batch, pre16.data(), hidden16.data(), dy.data(), grads, d_hidden.data(),
                                  d_pre.data(), dy.data());
          return std::vector<std::vector<float>>{dy.download(), gw_in.download(), gb_in.download(),
                                                 gw_out.download(), gb_out.download()};
        };
        const auto got = run(*fused), want = run(*separate);
        const char* names[] = {"dx", "w_in", "b_in", "w_out", "b_out"};
        for (std::size_t i = 0; i < got.size(); ++i)
          EXPECT_TRUE(std::memcmp(got[i].data(), want[i].data(), sizeof(float) * got[i].size()) == 0) << names[i];
      }
  expect_environment_error("MOE_BIAS_GRADIENT_SUMS_IN_EPILOGUE", "yes");
}

TEST_F(CudaOps, HiddenEpilogueByElementIsTheTilesBitForBit) {
  // MOE_HIDDEN_EPILOGUE_BY_ELEMENT=1 runs the experts' bf16 hidden epilogue with a thread
  // per 8 (4, 2) elements over every row, each finding its row's expert, where by default
  // a block takes a tile of 4 rows: the same additions and roundings, so the same bits,
  // in an inference forward (its output) and a training one (also the kept
  // pre-activations and hidden). Groups of 37, 0, 57 and 33 rows from row 3 (tiles across
  // experts, an empty one), the last without an input bias; ffn and glu; the three
  // vector widths (H 64, 36, 30).
  const std::vector<std::int64_t> offsets = {3, 40, 40, 97, 130};
  const std::int64_t rows = offsets.back(), T = 90;
  const std::size_t groups = offsets.size() - 1;
  const std::unique_ptr<moe::kernels::Ops> by_element = bf16_ops_with("MOE_HIDDEN_EPILOGUE_BY_ELEMENT", "1"),
                                           tiles = bf16_ops_with("MOE_HIDDEN_EPILOGUE_BY_ELEMENT", "");
  std::vector<std::int32_t> token_of(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) token_of[static_cast<std::size_t>(r)] = static_cast<std::int32_t>((r * 7) % T);
  for (const std::int64_t H : {64, 36, 30})
    for (const bool gated : {false, true})
      for (const bool training : {false, true}) {
        const std::int64_t F = expert_width(H), GF = gated ? 2 * F : F;
        SCOPED_TRACE(::testing::Message() << "H=" << H << " F=" << F << (gated ? " glu" : " ffn")
                                          << (training ? " training" : " inference"));
        const std::vector<float> source = random(T * H, 91), w_in = random(groups * H * GF, 92, 0.2),
                                 w_out = random(groups * F * H, 93, 0.2), b_in = random(groups * GF, 94, 0.5),
                                 b_out = random(groups * H, 95, 0.5);
        // The output, and for training the kept pre-activations and hidden, as downloaded.
        auto run = [&](moe::kernels::Ops& ops) {
          Buffer<float> src = device(source, &ops), dw_in = device(w_in, &ops), dw_out = device(w_out, &ops),
                        db_in = device(b_in, &ops), db_out = device(b_out, &ops),
                        gathered = device_zeros<float>(ops.kept_floats(rows * H), &ops),
                        pre = device_zeros<float>(ops.kept_floats(rows * GF), &ops),
                        hidden = device_zeros<float>(ops.kept_floats(rows * F), &ops),
                        out = device_zeros<float>(rows * H, &ops);
          Buffer<std::int32_t> tokens = device(token_of, &ops);
          moe::kernels::ExpertBatch batch;
          batch.row_offsets = offsets, batch.in_dim = H, batch.width = F, batch.gated = gated;
          batch.act = gated ? Act::SiLU : Act::GELU, batch.keep_for_backward = training;
          moe::testing::point_at_experts(batch, groups, dw_in.data(), dw_out.data(), db_in.data(), db_out.data());
          batch.b_in[groups - 1] = nullptr;
          ops.gather_expert_ffn(src.data(), tokens.data(), gathered.data(), batch, pre.data(), hidden.data(),
                                out.data());
          return std::vector<std::vector<float>>{out.download(), pre.download(), hidden.download()};
        };
        const std::vector<std::vector<float>> got = run(*by_element), want = run(*tiles);
        const char* names[] = {"output", "kept pre-activations", "kept hidden"};
        for (std::size_t i = 0; i < got.size(); ++i) {
          ASSERT_EQ(got[i].size(), want[i].size());
          EXPECT_EQ(std::memcmp(got[i].data(), want[i].data(), sizeof(float) * got[i].size()), 0) << names[i];
        }
      }
  expect_environment_error("MOE_HIDDEN_EPILOGUE_BY_ELEMENT", "yes");
}

TEST_F(CudaOps, Bf16TrainingForwardKeepsBf16RowsForItsBackward) {
  // A bf16 training forward (gather_expert_ffn, keep_for_backward) keeps its input rows,
  // pre-activations and hidden in bf16 (kernels/ops.hpp), and writes no float32 copy of
  // them: the kept rows are the source rows rounded to bf16, the kept hidden is the
  // activation of the kept pre-activations (to bf16 rounding), and the backward on the
  // kept form equals the default backward on float32 copies of the kept values (1e-5
  // normwise, the input biases' gradients 4e-3, as above). ffn and glu.
  const std::vector<std::int64_t> offsets = {3, 40, 40, 97, 130};
  const std::int64_t H = 64, F = expert_width(H), rows = offsets.back(), first = offsets.front(), n = rows - first,
                     T = 90;
  const std::size_t groups = offsets.size() - 1;
  for (const bool gated : {false, true}) {
    SCOPED_TRACE(gated ? "glu" : "ffn");
    const std::int64_t GF = gated ? 2 * F : F;
    auto ops = moe::kernels::make_cuda_ops(0, GemmPrecision::BF16);
    std::vector<std::int32_t> token_of(static_cast<std::size_t>(rows));
    for (std::int64_t r = 0; r < rows; ++r) token_of[static_cast<std::size_t>(r)] = static_cast<std::int32_t>((r * 7) % T);
    const std::vector<float> source = random(T * H, 81);
    Buffer<float> src = device(source, ops.get()), w_in = device(random(groups * H * GF, 82, 0.2), ops.get()),
                  w_out = device(random(groups * F * H, 83, 0.2), ops.get()),
                  b_in = device(random(groups * GF, 86, 0.5), ops.get());
    Buffer<std::int32_t> dtokens = device(token_of, ops.get());
    // NaN-filled, so that a float32 write where only bf16 belongs shows.
    const float nan = std::nanf("");
    Buffer<float> gathered = device(std::vector<float>(ops->kept_floats(rows * H), nan), ops.get()),
                  pre = device(std::vector<float>(ops->kept_floats(rows * GF), nan), ops.get()),
                  hidden = device(std::vector<float>(ops->kept_floats(rows * F), nan), ops.get()),
                  out = device_zeros<float>(rows * H, ops.get());
    moe::kernels::ExpertBatch batch;
    batch.row_offsets = offsets, batch.in_dim = H, batch.width = F, batch.gated = gated;
    batch.act = gated ? Act::SiLU : Act::GELU, batch.keep_for_backward = true;
    moe::testing::point_at_experts(batch, groups, w_in.data(), w_out.data(), b_in.data());
    ops->gather_expert_ffn(src.data(), dtokens.data(), gathered.data(), batch, pre.data(), hidden.data(), out.data());

    const std::vector<float> kept_rows = kept_values(*ops, gathered.download(), first * H, n * H),
                             kept_pre = kept_values(*ops, pre.download(), first * GF, n * GF),
                             kept_hidden = kept_values(*ops, hidden.download(), first * F, n * F);
    std::vector<float> want_rows(static_cast<std::size_t>(n * H));
    for (std::int64_t r = 0; r < n; ++r) {
      const std::int64_t token = token_of[static_cast<std::size_t>(first + r)];
      for (std::int64_t h = 0; h < H; ++h)
        want_rows[static_cast<std::size_t>(r * H + h)] = source[static_cast<std::size_t>(token * H + h)];
    }
    EXPECT_EQ(kept_rows, rounded_to_bf16(want_rows)) << "the kept rows";
    std::vector<double> want_hidden(kept_hidden.size());
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t j = 0; j < F; ++j) {
        const double gate = kept_pre[static_cast<std::size_t>(r * GF + j)];
        const double a = moe::testing::reference_activation(batch.act, gate);
        want_hidden[static_cast<std::size_t>(r * F + j)] = gated ? a * kept_pre[static_cast<std::size_t>(r * GF + F + j)] : a;
      }
    EXPECT_LE(relative_error(kept_hidden.data(), want_hidden.data(), n * F), 1e-2) << "the kept hidden";

    // The backward on the kept form, and the default on float32 copies of its values
    // (rows before the batch's first are not the batch's: zeros there).
    auto float_rows = [&](const std::vector<float>& kept, std::int64_t width) {
      std::vector<float> all(static_cast<std::size_t>(rows * width), 0.0f);
      std::copy(kept.begin(), kept.end(), all.begin() + first * width);
      return device(all, ops.get());
    };
    Buffer<float> x32 = float_rows(kept_rows, H), pre32 = float_rows(kept_pre, GF), hidden32 = float_rows(kept_hidden, F);
    auto backward = [&](bool kept) {
      Buffer<float> dy = device(random(rows * H, 84), ops.get()), d_hidden = device_zeros<float>(rows * F, ops.get()),
                    d_pre = device_zeros<float>(rows * GF, ops.get()),
                    gw_in = device_zeros<float>(groups * H * GF, ops.get()),
                    gw_out = device_zeros<float>(groups * F * H, ops.get()), gb_in = device_zeros<float>(groups * GF, ops.get());
      moe::kernels::ExpertBatchGradients grads;
      for (std::size_t g = 0; g < groups; ++g) {
        grads.w_in.push_back(gw_in.data() + g * H * GF), grads.w_out.push_back(gw_out.data() + g * F * H);
        grads.b_in.push_back(gb_in.data() + g * GF), grads.b_out.push_back(nullptr);
      }
      moe::kernels::ExpertBatch b = batch;
      if (kept) {
        b.x = gathered.data(), b.x_kept = true;
        ops->expert_ffn_backward(b, pre.data(), hidden.data(), dy.data(), grads, d_hidden.data(), d_pre.data(),
                                 dy.data());
      } else {
        b.x = x32.data();
        ops->moe::kernels::Ops::expert_ffn_backward(b, pre32.data(), hidden32.data(), dy.data(), grads,
                                                    d_hidden.data(), d_pre.data(), dy.data());
      }
      std::vector<float> all = dy.download();
      all.erase(all.begin(), all.begin() + first * H);
      for (const Buffer<float>* g : {&gw_in, &gw_out}) {
        const std::vector<float> v = g->download();
        all.insert(all.end(), v.begin(), v.end());
      }
      return std::make_pair(all, gb_in.download());
    };
    const auto got = backward(true), want = backward(false);
    EXPECT_LE(relative_error(got.first.data(), want.first.data(), static_cast<std::int64_t>(got.first.size())), 1e-5)
        << "dx, w_in and w_out";
    EXPECT_LE(relative_error(got.second.data(), want.second.data(), static_cast<std::int64_t>(got.second.size())), 4e-3)
        << "b_in";
  }
}

TEST_F(CudaOps, GroupedColumnSumsAreEachGroupsColumnSums) {
  // add_grouped_column_sums (two launches for every group) against add_column_sums per
  // group, bit for bit: the same chunks from each group's first row, added in the same
  // order. Groups across chunk edges, an empty one, one of a single row, one skipped
  // (null sums), from row 3; widths the grouped kernel takes 8, 4 and 1 columns a thread
  // (64, 36, 33), where add_column_sums takes one: the same bits whatever the width.
  const std::vector<std::int64_t> offsets = {3, 300, 300, 1100, 1101, 1400, 1500};
  const std::size_t groups = offsets.size() - 1, skipped = 4;
  for (const std::int64_t cols : {64, 36, 33}) {
    SCOPED_TRACE(::testing::Message() << "cols " << cols);
    auto ops = moe::kernels::make_cuda_ops(0, GemmPrecision::FP32);
    Buffer<float> m = device(random(offsets.back() * cols, 71), ops.get());
    auto run = [&](bool grouped) {
      Buffer<float> sums = device(random(groups * cols, 72), ops.get());
      std::vector<float*> into;
      for (std::size_t g = 0; g < groups; ++g) into.push_back(g == skipped ? nullptr : sums.data() + g * cols);
      if (grouped) {
        ops->add_grouped_column_sums(m.data(), offsets, cols, into);
      } else {
        for (std::size_t g = 0; g < groups; ++g)
          if (into[g] && offsets[g + 1] > offsets[g])
            ops->add_column_sums(m.data() + offsets[g] * cols, offsets[g + 1] - offsets[g], cols, into[g]);
      }
      return sums.download();
    };
    const std::vector<float> got = run(true), want = run(false);
    EXPECT_EQ(got, want);
    const std::vector<float> untouched = random(groups * cols, 72);
    for (std::int64_t c = 0; c < cols; ++c)
      EXPECT_EQ(got[skipped * cols + c], untouched[skipped * cols + c]) << "a null group's sums are not written";
  }
}

TEST_F(CudaOps, Bf16ExpertGemmWritesAllOfAFreshC) {
  // beta = 0 into memory never written, then a kernel of ours reads every element (the
  // backward's activation_backward reads such a GEMM's ∂L/∂hidden): the values must be
  // the product's. Under compute-sanitizer initcheck this separates cuBLAS's writes
  // that the tool does not see from a real uninitialised read.
  auto ops = moe::kernels::make_cuda_ops(0, GemmPrecision::BF16);
  const std::int64_t m = 300, n = 520, k = 96;
  const auto a = random(m * k, 51), b = random(n * k, 52), z = random(m * n, 53);
  std::vector<float> product(m * n), expected(m * n);
  cpu->gemm(false, true, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.0f, product.data(), n);
  cpu->activation_backward(z.data(), product.data(), m * n, Act::GELU, expected.data());
  Buffer<float> da = device(a, ops.get()), db = device(b, ops.get()), dz = device(z, ops.get());
  Buffer<float> dc(*ops), out = device_zeros<float>(m * n, ops.get());
  dc.resize(m * n);  // not zeroed
  ops->expert_gemm(false, true, m, n, k, 1.0f, da.data(), k, db.data(), k, 0.0f, dc.data(), n);
  ops->activation_backward(dz.data(), dc.data(), m * n, Act::GELU, out.data());
  EXPECT_LE(relative_error(out.download().data(), expected.data(), m * n), 1e-2);
}

TEST_F(CudaOps, DownloadsQueuedLaterLandAtTheNextSynchronize) {
  // copy_to_host_later stages on the stream and writes the host at synchronize() (or the
  // next copy_to_host): several results for one wait. Sizes past the first staging
  // buffer make it grow while copies are queued.
  const std::vector<std::int64_t> sizes = {5, 1000, 300000, 7, 600000};
  std::vector<Buffer<float>> device_arrays;
  std::vector<std::vector<float>> host(sizes.size());
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    device_arrays.push_back(device(random(sizes[i], 60 + i)));
    host[i].assign(static_cast<std::size_t>(sizes[i]), -1.0f);
  }
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    gpu->scale(device_arrays[i].data(), sizes[i], 2.0f);  // work queued before each copy
    gpu->copy_to_host_later(host[i].data(), device_arrays[i].data(), sizeof(float) * sizes[i]);
  }
  gpu->synchronize();
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    std::vector<float> expected = random(sizes[i], 60 + i);
    for (float& v : expected) v *= 2.0f;
    EXPECT_EQ(host[i], expected) << "array " << i;
  }
  std::vector<float> one(7, 0.0f), two(7, 0.0f);
  gpu->copy_to_host_later(one.data(), device_arrays[3].data(), sizeof(float) * 7);
  gpu->copy_to_host(two.data(), device_arrays[3].data(), sizeof(float) * 7);
  EXPECT_EQ(one, two) << "copy_to_host lands the queued copies too";
  // wait_for_downloads lands them too, while work queued after them (the layer's shared
  // expert) may still run: its result is there after synchronize().
  std::vector<float> three(7, 0.0f), four(7, 0.0f);
  gpu->copy_to_host_later(three.data(), device_arrays[3].data(), sizeof(float) * 7);
  for (int i = 0; i < 20; ++i) gpu->scale(device_arrays[4].data(), sizes[4], 1.0f);  // work after the copy
  gpu->scale(device_arrays[3].data(), 7, 3.0f);
  gpu->wait_for_downloads();
  EXPECT_EQ(three, two) << "the value before the later scaling";
  gpu->copy_to_host(four.data(), device_arrays[3].data(), sizeof(float) * 7);
  for (std::size_t i = 0; i < 7; ++i) EXPECT_EQ(four[i], 3.0f * two[i]);
}

TEST_F(CudaOps, NormalStreamOnTheGpuIsTheHostsStream) {
  // Synthetic token rows made on the GPU (moe train --device cuda): the host's values,
  // up to the last bit of the GPU's double-precision log, sin and cos. An odd count.
  const std::int64_t n = 100001;
  std::vector<float> host(n);
  cpu->fill_normal(host.data(), n, 2000, 12345);
  Buffer<float> d = device_zeros<float>(n);
  gpu->fill_normal(d.data(), n, 2000, 12345);
  const auto got = d.download();
  EXPECT_LE(relative_error(got.data(), host.data(), n), 1e-7);
  std::int64_t differ = 0;
  for (std::int64_t i = 0; i < n; ++i) differ += got[i] != host[i];
  EXPECT_LE(differ, n / 1000) << "elements not bit-identical";
}

TEST_F(CudaOps, SmallUploadsQueuedBehindWorkArriveInOrder) {
  // copy_from_host returns before the GPU has the bytes (a pinned staging ring): the
  // caller's memory may be reused at once, and every upload lands in stream order. 100
  // uploads from one reused host array (more than the ring's slots), each behind a
  // kernel on the same rows, then a second upload over the first rows.
  const std::int64_t W = 1000, R = 100;
  Buffer<float> d = device_zeros<float>(W * R);
  std::vector<float> host(W);
  for (std::int64_t r = 0; r < R; ++r) {
    std::fill(host.begin(), host.end(), float(r));
    gpu->scale(d.data() + r * W, W, 3.0f);
    gpu->copy_from_host(d.data() + r * W, host.data(), sizeof(float) * W);
  }
  std::fill(host.begin(), host.end(), -1.0f);
  gpu->copy_from_host(d.data(), host.data(), sizeof(float) * W);
  std::fill(host.begin(), host.end(), -2.0f);  // after the call: must not reach the GPU
  const auto got = d.download();
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t i = 0; i < W; ++i) ASSERT_EQ(got[r * W + i], r == 0 ? -1.0f : float(r)) << r << "," << i;
}

TEST_F(CudaOps, Bf16WeightCopiesFollowWeightUpdates) {
  auto ops = moe::kernels::make_cuda_ops(0, GemmPrecision::BF16);
  const std::int64_t n = 16, K = 32, N = 24;
  const auto x = random(n * K, 7), w = random(K * N, 8), w2 = random(K * N, 9);
  Buffer<float> dx = device(x, ops.get()), dw = device(w, ops.get()), out = device_zeros<float>(n * N, ops.get());
  ops->linear(dx.data(), n, K, dw.data(), N, nullptr, Act::Identity, nullptr, out.data());
  dw.upload(w2);  // new weights at the same address: the cached bf16 copy must go
  ops->linear(dx.data(), n, K, dw.data(), N, nullptr, Act::Identity, nullptr, out.data());
  std::vector<float> expected(n * N);
  cpu->linear(x.data(), n, K, w2.data(), N, nullptr, Act::Identity, nullptr, expected.data());
  EXPECT_LE(relative_error(out.download().data(), expected.data(), n * N), 3e-2);
}

TEST_F(CudaOps, RoutersAndRouterBackward) {
  // 300 tokens: the last block of rows is partial. Up to 256 experts and 32 choices a
  // warp routes each token (two experts a lane at 64, eight at 256); beyond, a thread
  // per token, with 32 rows a block staged in shared memory at 128 experts and k = 40,
  // 16 at 320, and reading global memory at 640.
  const std::int64_t T = 300;
  for (const auto [E, k] : {std::pair{64, 8}, std::pair{256, 8}, std::pair{8, 2}, std::pair{128, 40},
                            std::pair{320, 8}, std::pair{640, 2}})
    for (const bool sigmoid : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "E=" << E << " k=" << k << (sigmoid ? " sigmoid" : " softmax"));
      moe::kernels::RouterParams p;
      p.num_experts = E, p.top_k = k, p.sigmoid = sigmoid;
      if (sigmoid) p.n_group = 8, p.topk_group = 4, p.scale = 2.5f;
      const auto logits = random(T * E, 10, 3.0);
      const auto bias = random(E, 13, 0.1);
      std::vector<float> probs(T * E), weights(T * k), lse(T);
      std::vector<std::int32_t> idx(T * k);
      cpu->route(logits.data(), T, p, sigmoid ? bias.data() : nullptr, probs.data(), idx.data(), weights.data(),
                 lse.data());
      Buffer<float> dl = device(logits), dbias = device(bias), dp = device_zeros<float>(T * E),
                    dw = device_zeros<float>(T * k), dlse = device_zeros<float>(T);
      Buffer<std::int32_t> di = device_zeros<std::int32_t>(T * k);
      gpu->route(dl.data(), T, p, sigmoid ? dbias.data() : nullptr, dp.data(), di.data(), dw.data(), dlse.data());
      EXPECT_EQ(di.download(), idx);
      EXPECT_LE(relative_error(dp.download().data(), probs.data(), T * E), 1e-5);
      EXPECT_LE(relative_error(dw.download().data(), weights.data(), T * k), 1e-5);
      EXPECT_LE(relative_error(dlse.download().data(), lse.data(), T), 1e-5);

      const auto d_weights = random(T * k, 11);
      const float z = sigmoid ? 0.0f : 0.1f;
      std::vector<float> aux(E, 0.02f), d_logits(T * E);
      cpu->router_backward(logits.data(), probs.data(), idx.data(), d_weights.data(), lse.data(), T, p, aux.data(), z,
                           d_logits.data());
      Buffer<float> ddw = device(d_weights), daux = device(aux), dd = device_zeros<float>(T * E);
      gpu->router_backward(dl.data(), dp.data(), di.data(), ddw.data(), dlse.data(), T, p, daux.data(), z, dd.data());
      EXPECT_LE(relative_error(dd.download().data(), d_logits.data(), T * E), 1e-5);
    }
}

TEST_F(CudaOps, GluAndGatedAdd) {
  const std::int64_t n = 70, F = 300, H = 500;
  const auto z = random(n * 2 * F, 30), dh = random(n * F, 31), y = random(n * H, 32), logit = random(n, 33),
             d_out = random(n * H, 34);
  for (const Act act : {Act::SiLU, Act::GELU, Act::GELUTanh, Act::ReLU}) {
    std::vector<float> h(n * F), dz(n * 2 * F);
    cpu->glu(z.data(), n, F, act, h.data());
    cpu->glu_backward(z.data(), dh.data(), n, F, act, dz.data());
    Buffer<float> dzin = device(z), ddh = device(dh), dhout = device_zeros<float>(n * F),
                  ddz = device_zeros<float>(n * 2 * F);
    gpu->glu(dzin.data(), n, F, act, dhout.data());
    gpu->glu_backward(dzin.data(), ddh.data(), n, F, act, ddz.data());
    EXPECT_LE(relative_error(dhout.download().data(), h.data(), n * F), 1e-5);
    EXPECT_LE(relative_error(ddz.download().data(), dz.data(), n * 2 * F), 1e-5);
  }
  std::vector<float> out = d_out, d_y(n * H), d_logit(n);
  cpu->gated_add(y.data(), logit.data(), n, H, out.data());
  cpu->gated_add_backward(d_out.data(), y.data(), logit.data(), n, H, d_y.data(), d_logit.data());
  Buffer<float> dy = device(y), dlogit = device(logit), dout = device(d_out), gdy = device_zeros<float>(n * H),
                gdl = device_zeros<float>(n), gout = device(d_out);
  gpu->gated_add(dy.data(), dlogit.data(), n, H, gout.data());
  gpu->gated_add_backward(dout.data(), dy.data(), dlogit.data(), n, H, gdy.data(), gdl.data());
  EXPECT_LE(relative_error(gout.download().data(), out.data(), n * H), 1e-6);
  EXPECT_LE(relative_error(gdy.download().data(), d_y.data(), n * H), 1e-6);
  EXPECT_LE(relative_error(gdl.download().data(), d_logit.data(), n), 1e-4);
}

TEST_F(CudaOps, RowsGatherCombineAndBackward) {
  // Against the CPU ops, at widths that take the row kernels' 8-a-thread path (1000),
  // the 4-a-thread path (1004) and neither (999). The combine: rows of two entries and
  // a row of none; its backward also with rows of more entries than a block takes at a
  // time (8: rows of 11 and 29 entries).
  for (const std::int64_t W : {1000, 1004, 999}) {
    SCOPED_TRACE(::testing::Message() << "width " << W);
    const std::int64_t n_src = 40;
    const auto src = random(n_src * W, 12);
    std::vector<std::int32_t> rows;
    for (int i = 0; i < 55; ++i) rows.push_back(i % 9 == 4 ? -1 : (i * 7) % n_src);  // -1: a padding row, zeros
    std::vector<float> gathered(rows.size() * W);
    cpu->gather_rows(src.data(), rows.data(), std::int64_t(rows.size()), W, gathered.data());
    Buffer<float> ds = device(src), dg = device(std::vector<float>(rows.size() * W, std::nanf("")));
    Buffer<std::int32_t> dr = device(rows);
    gpu->gather_rows(ds.data(), dr.data(), std::int64_t(rows.size()), W, dg.data());
    EXPECT_EQ(dg.download(), gathered);

    // Row r of 20 combines entries for sources 2r and 2r + 1 (each source once).
    std::vector<std::int32_t> offsets = {0}, sources;
    for (int r = 0; r < 20; ++r) sources.push_back(2 * r), sources.push_back(2 * r + 1), offsets.push_back(2 * r + 2);
    offsets[5] = offsets[4];  // and row 4 has none: a zero row
    for (int r = 5; r <= 20; ++r) offsets[r] = std::max(offsets[r], offsets[r - 1]);
    const auto weights = random(40, 13);
    std::vector<float> combined(20 * W);
    cpu->combine_rows(src.data(), W, 20, offsets.data(), sources.data(), weights.data(), combined.data());
    Buffer<std::int32_t> doff = device(offsets), dsrc = device(sources);
    Buffer<float> dwt = device(weights), dc = device_zeros<float>(20 * W);
    gpu->combine_rows(ds.data(), W, 20, doff.data(), dsrc.data(), dwt.data(), dc.data());
    EXPECT_LE(relative_error(dc.download().data(), combined.data(), 20 * W), 1e-6);

    // The backward, on that combine and on one of rows of 11, 0 and 29 entries.
    const std::vector<std::int32_t> long_offsets = {0, 11, 11, 40};
    const std::vector<std::int32_t>* layouts[] = {&offsets, &long_offsets};
    for (const std::vector<std::int32_t>* entry_offsets : layouts) {
      const std::int64_t n_out = static_cast<std::int64_t>(entry_offsets->size()) - 1;
      const auto d_dst = random(n_out * W, 14);
      std::vector<float> d_src(n_src * W, 0.0f), d_w(40, 0.0f);
      cpu->combine_backward(d_dst.data(), src.data(), W, n_out, entry_offsets->data(), sources.data(), weights.data(),
                            d_src.data(), d_w.data());
      Buffer<std::int32_t> d_entry_offsets = device(*entry_offsets);
      Buffer<float> ddd = device(d_dst), dds = device_zeros<float>(n_src * W), ddw = device_zeros<float>(40);
      gpu->combine_backward(ddd.data(), ds.data(), W, n_out, d_entry_offsets.data(), dsrc.data(), dwt.data(),
                            dds.data(), ddw.data());
      EXPECT_EQ(dds.download(), d_src) << n_out << " rows";
      EXPECT_LE(relative_error(ddw.download().data(), d_w.data(), 40), 1e-6) << n_out << " rows";
    }
  }
}

// The plan's kernels (kernels/cuda/plan.cu) against the same steps run one thread at a
// time on the host (Ops' default, which tests/unit/test_plan_steps.cpp holds to the
// host plan): integers, so equal exactly. A kernel per step, and every step in one
// cooperative kernel (MOE_PLAN_IN_ONE_KERNEL=1), run and recorded in a CUDA graph and
// replayed. Then scatter, which sends the backward's weight gradients to their slots.
TEST_F(CudaOps, SingleRankPlanMatchesTheStepsOnTheHost) {
  const auto one_kernel = [] {
    const moe::testing::ScopedEnvironment one("MOE_PLAN_IN_ONE_KERNEL", "1");
    return moe::kernels::make_cuda_ops(0, GemmPrecision::FP32);
  }();
  struct Shape { std::int64_t T, k, E, capacity; };
  for (const Shape s : {Shape{1, 1, 1, 1}, Shape{128, 2, 8, 40}, Shape{129, 2, 8, 33}, Shape{1000, 8, 64, 100},
                        Shape{300, 8, 256, 9}, Shape{4096, 2, 8, 4096 * 2}}) {
    SCOPED_TRACE(::testing::Message() << "T=" << s.T << " k=" << s.k << " E=" << s.E << " C=" << s.capacity);
    const std::int64_t n = s.T * s.k;
    std::vector<std::int32_t> indices(static_cast<std::size_t>(n));
    std::vector<float> weights = random(n, 41);
    std::uint64_t state = 17;
    for (std::int64_t t = 0; t < s.T; ++t)  // distinct experts per token, skewed to low ids
      for (std::int64_t j = 0; j < s.k; ++j) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        const double u = static_cast<double>(state >> 11) / 9007199254740992.0;
        indices[static_cast<std::size_t>(t * s.k + j)] =
            static_cast<std::int32_t>((static_cast<std::int64_t>(u * u * static_cast<double>(s.E)) + j) % s.E);
      }
    struct Result {
      std::vector<std::int32_t> grouped, offsets, sources, slots;
      std::vector<float> combine_weights;
      std::vector<std::int64_t> kept;
    };
    // Packed, padded to R = min(C, T·k) rows per expert (every padding row -1; these
    // choices may repeat an expert within a token, so T rows need not hold its kept
    // ones), padded to the most kept rows with room R (packed where they exceed it),
    // and to R where the most fit in it (speculated rows).
    const std::int64_t padded = std::min(s.capacity, n);
    // recorded: the plan recorded in a graph, then replayed; the kept counts, which a
    // recording cannot download, are then the host's (`want`).
    using moe::kernels::plan::Padding;
    auto run = [&](moe::kernels::Ops& ops, std::int64_t rows_per_expert, Padding padding = Padding::Room,
                   const Result* recorded = nullptr) {
      Buffer<std::int32_t> di = device(indices, &ops), grouped(ops), offsets(ops), sources(ops), slots(ops);
      Buffer<float> dw = device(weights, &ops), cw(ops);
      Result r;
      r.kept.assign(static_cast<std::size_t>(s.E), -1);
      const std::int64_t rows = rows_per_expert > 0 ? std::max(s.E * rows_per_expert, n) : n;
      const moe::kernels::SingleRankPlan out{grouped.resize(static_cast<std::size_t>(rows)),
                                             offsets.resize(static_cast<std::size_t>(s.T + 1)),
                                             sources.resize(static_cast<std::size_t>(n)),
                                             cw.resize(static_cast<std::size_t>(n)),
                                             slots.resize(static_cast<std::size_t>(n)),
                                             recorded ? nullptr : r.kept.data()};
      // The plan writes the first A entries; the whole buffers are downloaded below, so
      // the rest is zeroed first (else initcheck rightly reports reading it).
      for (Buffer<std::int32_t>* b : {&grouped, &sources, &slots}) b->zero();
      cw.zero();
      auto plan = [&] {
        ops.plan_single_rank(di.data(), dw.data(), s.T, s.k, s.E, s.capacity, rows_per_expert, padding, out);
      };
      if (recorded) {
        ops.synchronize();  // the zeroing above is not part of the recording
        ops.begin_capture();
        plan();
        const std::unique_ptr<moe::kernels::CapturedWork> work = ops.end_capture();
        ops.replay(*work);
        r.kept = recorded->kept;
      } else {
        plan();
      }
      ops.synchronize();
      std::int64_t A = 0;
      for (std::int64_t c : r.kept) A += c;
      auto first = [&](auto& b, std::int64_t count) {
        auto v = b.download();
        v.resize(static_cast<std::size_t>(count));
        return v;
      };
      r.grouped = first(grouped, rows_per_expert > 0 ? rows : A), r.sources = first(sources, A),
      r.slots = first(slots, A), r.combine_weights = first(cw, A);
      r.offsets = offsets.download();
      return r;
    };
    for (const auto [rows_per_expert, padding] :
         {std::pair{std::int64_t{0}, Padding::Room}, std::pair{padded, Padding::Room},
          std::pair{padded, Padding::Most}, std::pair{padded, Padding::RoomIfFits}}) {
      SCOPED_TRACE(::testing::Message() << "rows per expert " << rows_per_expert << " padding "
                                        << static_cast<int>(padding));
      const Result want = run(*cpu, rows_per_expert, padding);
      const std::pair<const char*, Result> launches[] = {
          {"a kernel per step", run(*gpu, rows_per_expert, padding)},
          {"one kernel", run(*one_kernel, rows_per_expert, padding)},
          {"one kernel, recorded and replayed", run(*one_kernel, rows_per_expert, padding, &want)}};
      for (const auto& [launch, got] : launches) {
        SCOPED_TRACE(launch);
        EXPECT_EQ(got.kept, want.kept);
        EXPECT_EQ(got.grouped, want.grouped);
        EXPECT_EQ(got.offsets, want.offsets);
        EXPECT_EQ(got.sources, want.sources);
        EXPECT_EQ(got.slots, want.slots);
        EXPECT_EQ(got.combine_weights, want.combine_weights);
      }
    }
    const Result want = run(*cpu, 0);

    std::vector<float> scattered(static_cast<std::size_t>(n), 0.0f);
    const std::vector<float> values = random(static_cast<std::int64_t>(want.slots.size()), 43);
    cpu->scatter(values.data(), want.slots.data(), static_cast<std::int64_t>(values.size()), scattered.data());
    Buffer<float> dv = device(values), dst = device_zeros<float>(static_cast<std::size_t>(n));
    Buffer<std::int32_t> dslots = device(want.slots);
    gpu->scatter(dv.data(), dslots.data(), static_cast<std::int64_t>(values.size()), dst.data());
    EXPECT_EQ(dst.download(), scattered);
  }
  expect_environment_error("MOE_PLAN_IN_ONE_KERNEL", "yes");
}

// The distributed plan's halves (plan_send, then plan_received over the records as if
// one rank received them all) on the GPU, a kernel per step and in one cooperative
// kernel, against the steps one thread at a time on the host: the same integers.
TEST_F(CudaOps, DistributedPlanMatchesTheStepsOnTheHost) {
  const auto one_kernel = [] {
    const moe::testing::ScopedEnvironment one("MOE_PLAN_IN_ONE_KERNEL", "1");
    return moe::kernels::make_cuda_ops(0, GemmPrecision::FP32);
  }();
  using moe::kernels::plan::AssignmentRecord;
  struct Shape { std::int64_t T, k, E, capacity; int ranks, own_rank; bool deduplicate; };
  for (const Shape s : {Shape{1, 1, 2, 1, 2, 0, false}, Shape{300, 2, 8, 60, 2, 1, true},
                        Shape{1000, 8, 64, 100, 4, 2, true}, Shape{700, 4, 16, 700 * 4, 4, 0, false}}) {
    SCOPED_TRACE(::testing::Message() << "T=" << s.T << " k=" << s.k << " E=" << s.E << " C=" << s.capacity
                                      << " P=" << s.ranks << " rank " << s.own_rank);
    const std::int64_t n = s.T * s.k;
    const std::vector<std::int32_t> indices = moe::testing::skewed_choices(s.T, s.k, s.E, 23);
    const std::vector<float> weights = random(n, 47);
    struct Result {
      std::vector<std::int64_t> rows_per_rank, assignments_per_rank, kept;
      std::vector<std::int32_t> row_token, slots, token_offsets, token_rows;
      std::vector<std::uint64_t> records;  // each record's 8 bytes
      std::vector<std::int32_t> grouped_rows, combine_offsets, combine_sources;
      std::vector<float> combine_weights;
    };
    auto run = [&](moe::kernels::Ops& ops) {
      Result r;
      r.rows_per_rank.assign(static_cast<std::size_t>(s.ranks), -1);
      r.assignments_per_rank.assign(static_cast<std::size_t>(s.ranks), -1);
      r.kept.assign(static_cast<std::size_t>(s.E), -1);
      Buffer<std::int32_t> di = device(indices, &ops), row_token(ops), slots(ops), token_offsets(ops), token_rows(ops);
      Buffer<float> dw = device(weights, &ops);
      Buffer<AssignmentRecord> records(ops);
      const auto N = static_cast<std::size_t>(n);
      const moe::kernels::SendPlan send{row_token.resize(N),
                                        records.resize(N),
                                        slots.resize(N),
                                        token_offsets.resize(static_cast<std::size_t>(s.T + 1)),
                                        token_rows.resize(N),
                                        r.rows_per_rank.data(),
                                        r.assignments_per_rank.data(),
                                        r.kept.data()};
      // Only the first R rows and A records are written, and whole buffers are downloaded
      // below: zeroed first (else initcheck rightly reports reading the rest).
      for (Buffer<std::int32_t>* b : {&row_token, &slots, &token_rows}) b->zero();
      records.zero();
      ops.plan_send(di.data(), dw.data(), s.T, s.k, s.E, s.capacity, s.ranks, s.own_rank, s.deduplicate, send);
      ops.synchronize();
      std::int64_t R = 0, A = 0;
      for (int q = 0; q < s.ranks; ++q) R += r.rows_per_rank[q], A += r.assignments_per_rank[q];
      auto first = [](const auto& b, std::int64_t count) {
        auto v = b.download();
        v.resize(static_cast<std::size_t>(count));
        return v;
      };
      r.row_token = first(row_token, R), r.token_rows = first(token_rows, R), r.slots = first(slots, A);
      r.token_offsets = token_offsets.download();
      for (const AssignmentRecord& record : first(records, A)) {
        std::uint64_t bytes = 0;
        std::memcpy(&bytes, &record, sizeof bytes);
        r.records.push_back(bytes);
      }
      Buffer<std::int32_t> grouped(ops), offsets(ops), sources(ops);
      Buffer<float> cw(ops);
      const auto a = static_cast<std::size_t>(std::max<std::int64_t>(A, 1));
      const moe::kernels::ReceivedPlan received{grouped.resize(a), offsets.resize(static_cast<std::size_t>(R + 1)),
                                                sources.resize(a), cw.resize(a)};
      for (Buffer<std::int32_t>* b : {&grouped, &sources}) b->zero();
      cw.zero();
      ops.plan_received(records.data(), A, R, s.E / s.ranks, received);
      ops.synchronize();
      r.grouped_rows = first(grouped, A), r.combine_offsets = offsets.download(), r.combine_sources = first(sources, A);
      r.combine_weights = first(cw, A);
      return r;
    };
    const Result want = run(*cpu);
    const std::pair<const char*, Result> launches[] = {{"a kernel per step", run(*gpu)},
                                                       {"one kernel", run(*one_kernel)}};
    for (const auto& [launch, got] : launches) {
      SCOPED_TRACE(launch);
      EXPECT_EQ(got.rows_per_rank, want.rows_per_rank);
      EXPECT_EQ(got.assignments_per_rank, want.assignments_per_rank);
      EXPECT_EQ(got.kept, want.kept);
      EXPECT_EQ(got.row_token, want.row_token);
      EXPECT_EQ(got.slots, want.slots);
      EXPECT_EQ(got.token_offsets, want.token_offsets);
      EXPECT_EQ(got.token_rows, want.token_rows);
      EXPECT_EQ(got.records, want.records);
      EXPECT_EQ(got.grouped_rows, want.grouped_rows);
      EXPECT_EQ(got.combine_offsets, want.combine_offsets);
      EXPECT_EQ(got.combine_sources, want.combine_sources);
      EXPECT_EQ(got.combine_weights, want.combine_weights);
    }
  }
}

TEST_F(CudaOps, ReductionsActivationBackwardAndOptimizers) {
  const std::int64_t rows = 513, cols = 70, n = rows * cols;
  const auto m = random(n, 15), z = random(n, 16), dh = random(n, 17);
  std::vector<double> sums(cols), gpu_sums(cols);
  cpu->column_sums_later(m.data(), rows, cols, sums.data());
  Buffer<float> dm = device(m);
  gpu->column_sums_later(dm.data(), rows, cols, gpu_sums.data());
  gpu->wait_for_downloads();
  for (std::int64_t c = 0; c < cols; ++c) EXPECT_NEAR(gpu_sums[c], sums[c], 1e-9 * rows);
  // Many chunks of rows, and as many columns as a bias gradient: the kernel's order of
  // additions is the shared column_sum's (kernels/cuda/reductions.cuh), bit for bit.
  {
    const std::int64_t tall = 70000, wide = 300;
    const auto big = random(tall * wide, 25);
    Buffer<float> dbig = device(big);
    std::vector<double> got(wide);
    gpu->column_sums_later(dbig.data(), tall, wide, got.data());
    gpu->synchronize();
    for (std::int64_t c = 0; c < wide; c += 7)
      EXPECT_EQ(got[c], moe::kernels::cuda::column_sum(big.data(), tall, wide, c)) << "column " << c;
  }
  std::vector<float> bias(cols, 1.0f);
  cpu->add_column_sums(m.data(), rows, cols, bias.data());
  Buffer<float> db = device(std::vector<float>(cols, 1.0f));
  gpu->add_column_sums(dm.data(), rows, cols, db.data());
  EXPECT_LE(relative_error(db.download().data(), bias.data(), cols), 1e-6);
  EXPECT_NEAR(gpu->sum_squares(dm.data(), n), cpu->sum_squares(m.data(), n), 1e-9 * n);
  {  // several arrays with one wait: each sum the bits of its own sum_squares (one empty)
    Buffer<float> dz = device(z);
    const std::vector<const float*> arrays = {dm.data(), dz.data() + 5, dm.data(), dz.data()};
    const std::vector<std::int64_t> counts = {n, 1000, 0, n};
    std::vector<double> each(arrays.size(), -1.0);
    gpu->sum_squares_each(arrays, counts, each.data());
    for (std::size_t i = 0; i < arrays.size(); ++i)
      EXPECT_EQ(each[i], gpu->sum_squares(arrays[i], counts[i])) << "array " << i;
  }

  for (Act act : {Act::ReLU, Act::GELU, Act::SiLU}) {
    std::vector<float> dz(n);
    cpu->activation_backward(z.data(), dh.data(), n, act, dz.data());
    Buffer<float> dzz = device(z), ddh = device(dh), out = device_zeros<float>(n);
    gpu->activation_backward(dzz.data(), ddh.data(), n, act, out.data());
    EXPECT_LE(relative_error(out.download().data(), dz.data(), n), 1e-5) << int(act);
  }

  auto p = random(n, 18), g = random(n, 19), mom = random(n, 20), v = random(n, 21);
  for (auto& x : v) x = std::abs(x);
  Buffer<float> dp = device(p), dgr = device(g), dmo = device(mom), dv = device(v);
  cpu->adamw_update(p.data(), g.data(), mom.data(), v.data(), n, 0.01f, 0.9f, 0.999f, 1e-8f, 0.01f, 0.5f, 0.1f);
  gpu->adamw_update(dp.data(), dgr.data(), dmo.data(), dv.data(), n, 0.01f, 0.9f, 0.999f, 1e-8f, 0.01f, 0.5f, 0.1f);
  EXPECT_LE(relative_error(dp.download().data(), p.data(), n), 1e-6);
  cpu->sgd_update(p.data(), g.data(), mom.data(), n, 0.1f, 0.9f, 0.01f);
  gpu->sgd_update(dp.data(), dgr.data(), dmo.data(), n, 0.1f, 0.9f, 0.01f);
  EXPECT_LE(relative_error(dp.download().data(), p.data(), n), 1e-6);
  cpu->add(p.data(), g.data(), n);
  gpu->add(dp.data(), dgr.data(), n);
  cpu->scale(p.data(), n, 0.5f);
  gpu->scale(dp.data(), n, 0.5f);
  EXPECT_LE(relative_error(dp.download().data(), p.data(), n), 1e-6);
}

TEST_F(CudaOps, OptimizerUpdatesAreTheSameBitsFourAtATimeOrOne) {
  // The element-wise updates take 4 elements a thread where every array starts on 16
  // bytes and one otherwise (kernels/cuda/optimizer.cu), with the remainder of n one a
  // thread: the same per-element function, so the same bits either way. The same values
  // updated at an aligned start and at an offset of one element; lengths with a
  // remainder of 0 to 3.
  for (const std::int64_t n : {4096, 4097, 4098, 4099, 3}) {
    SCOPED_TRACE(::testing::Message() << "n " << n);
    const auto p = random(n, 81), g = random(n, 82), m = random(n, 83);
    auto v = random(n, 84);
    for (auto& x : v) x = std::abs(x);
    auto run = [&](std::int64_t offset) {  // every array at `offset` elements into its buffer
      auto at = [&](const std::vector<float>& values) {
        std::vector<float> padded(static_cast<std::size_t>(offset), 0.0f);
        padded.insert(padded.end(), values.begin(), values.end());
        return device(padded);
      };
      Buffer<float> dp = at(p), dg = at(g), dm = at(m), dv = at(v), dm_sgd = at(m);
      gpu->adamw_update(dp.data() + offset, dg.data() + offset, dm.data() + offset, dv.data() + offset, n, 0.01f,
                        0.9f, 0.999f, 1e-8f, 0.01f, 0.5f, 0.1f);
      gpu->sgd_update(dp.data() + offset, dg.data() + offset, dm_sgd.data() + offset, n, 0.1f, 0.9f, 0.01f);
      gpu->add(dp.data() + offset, dg.data() + offset, n);
      gpu->scale(dp.data() + offset, n, 0.75f);
      std::vector<std::vector<float>> out;
      for (Buffer<float>* b : {&dp, &dm, &dv, &dm_sgd}) {
        const std::vector<float> all = b->download();
        out.emplace_back(all.begin() + offset, all.end());
      }
      return out;
    };
    const auto aligned = run(0), offset = run(1);
    EXPECT_EQ(aligned, offset);
    // And against the CPU's updates, within rounding (the GPU's division and square
    // root are IEEE's, so in practice the same bits).
    std::vector<float> cp = p, cm = m, cv = v, cm_sgd = m;
    cpu->adamw_update(cp.data(), g.data(), cm.data(), cv.data(), n, 0.01f, 0.9f, 0.999f, 1e-8f, 0.01f, 0.5f, 0.1f);
    cpu->sgd_update(cp.data(), g.data(), cm_sgd.data(), n, 0.1f, 0.9f, 0.01f);
    cpu->add(cp.data(), g.data(), n);
    cpu->scale(cp.data(), n, 0.75f);
    EXPECT_LE(relative_error(aligned[0].data(), cp.data(), n), 1e-6);
    EXPECT_LE(relative_error(aligned[1].data(), cm.data(), n), 1e-6);
    EXPECT_LE(relative_error(aligned[2].data(), cv.data(), n), 1e-6);
    EXPECT_LE(relative_error(aligned[3].data(), cm_sgd.data(), n), 1e-6);
  }
}

}  // namespace
