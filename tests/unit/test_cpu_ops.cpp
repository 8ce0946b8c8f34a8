// Each CPU op against a float64 loop (docs/design.md §4: every kernel has a reference and a
// test comparing the two, with a stated tolerance: 1e-5 normwise relative).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <future>
#include <memory>
#include <random>
#include <thread>

#include "initialization.hpp"
#include "kernels/cpu/fast_math.hpp"
#include "kernels/cpu/parallel_gemm.hpp"
#include "kernels/ops.hpp"
#include "kernels/router_row.hpp"
#include "support/expert_reference.hpp"
#include "support/test_util.hpp"

using moe::kernels::Act;
using moe::testing::fill_normal;
using moe::testing::relative_error;

namespace {

std::unique_ptr<moe::kernels::Ops> ops = moe::kernels::make_cpu_ops();

struct GemmCase {
  bool ta, tb;
  std::int64_t m, n, k;
  float alpha, beta;
};

std::string gemm_name(const ::testing::TestParamInfo<std::tuple<GemmCase, int>>& info) {
  const GemmCase& p = std::get<0>(info.param);
  return std::string(p.ta ? "T" : "N") + (p.tb ? "T" : "N") + "_" + std::to_string(p.m) + "x" +
         std::to_string(p.n) + "x" + std::to_string(p.k) + "_threads" + std::to_string(std::get<1>(info.param));
}

void PrintTo(const GemmCase& p, std::ostream* os) {
  *os << (p.ta ? "T" : "N") << (p.tb ? "T" : "N") << " " << p.m << "x" << p.n << "x" << p.k;
}

class CpuGemm : public ::testing::TestWithParam<std::tuple<GemmCase, int>> {};

TEST_P(CpuGemm, MatchesFloat64) {
  const auto [p, threads] = GetParam();
  omp_set_num_threads(threads);
  const std::int64_t lda = (p.ta ? p.m : p.k) + 3, ldb = (p.tb ? p.k : p.n) + 1, ldc = p.n + 2;
  std::vector<float> a((p.ta ? p.k : p.m) * lda), b((p.tb ? p.n : p.k) * ldb), c(p.m * ldc);
  fill_normal(a.data(), std::int64_t(a.size()), 1.0, 1);
  fill_normal(b.data(), std::int64_t(b.size()), 1.0, 2);
  fill_normal(c.data(), std::int64_t(c.size()), 1.0, 3);
  std::vector<double> ref(c.begin(), c.end());
  for (std::int64_t i = 0; i < p.m; ++i)
    for (std::int64_t j = 0; j < p.n; ++j) {
      double s = 0;
      for (std::int64_t l = 0; l < p.k; ++l)
        s += double(p.ta ? a[l * lda + i] : a[i * lda + l]) * double(p.tb ? b[j * ldb + l] : b[l * ldb + j]);
      ref[i * ldc + j] = p.alpha * s + (p.beta == 0 ? 0.0 : p.beta * double(c[i * ldc + j]));
    }
  ops->gemm(p.ta, p.tb, p.m, p.n, p.k, p.alpha, a.data(), lda, b.data(), ldb, p.beta, c.data(), ldc);
  EXPECT_LE(relative_error(c.data(), ref.data(), std::int64_t(c.size())), 1e-5);
  omp_set_num_threads(omp_get_num_procs());
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CpuGemm,
    ::testing::Combine(::testing::Values(GemmCase{false, false, 1, 1, 1, 1.0f, 0.0f},
                                         GemmCase{false, false, 67, 129, 33, 1.0f, 0.0f},
                                         GemmCase{true, false, 200, 40, 17, 0.5f, 1.0f},
                                         GemmCase{false, true, 31, 300, 64, 1.0f, 0.25f},
                                         GemmCase{true, true, 128, 128, 128, -1.0f, 1.0f},
                                         GemmCase{false, false, 5, 7, 0, 1.0f, 0.5f}),
                       ::testing::Values(1, 2, 3)),
    gemm_name);

using moe::testing::reference_activation;

TEST(CpuFastMath, ExpWithinTwoUlpAndEdgeCases) {
  double worst = 0;
  for (float x = -86.9f; x < 88.72f; x += 0.000917f) {
    const double exact = std::exp(double(x));
    worst = std::max(worst, std::abs(double(moe::kernels::cpu::fast_exp(x)) - exact) / exact);
  }
  EXPECT_LE(worst, 2 * 5.97e-8) << "relative error; 2 ulp of float32 is 1.19e-7";
  EXPECT_TRUE(std::isnan(moe::kernels::cpu::fast_exp(std::nanf(""))));
  EXPECT_EQ(moe::kernels::cpu::fast_exp(100.0f), std::numeric_limits<float>::infinity());
  EXPECT_EQ(moe::kernels::cpu::fast_exp(88.73f), std::numeric_limits<float>::infinity()) << "e^88.73 > FLT_MAX";
  EXPECT_EQ(moe::kernels::cpu::fast_exp(std::numeric_limits<float>::infinity()), std::numeric_limits<float>::infinity());
  EXPECT_EQ(moe::kernels::cpu::fast_exp(-87.0f), 0.0f) << "results under 1.7e-38 flush to 0";
  EXPECT_EQ(moe::kernels::cpu::fast_exp(-1000.0f), 0.0f);
  EXPECT_EQ(moe::kernels::cpu::fast_exp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(moe::kernels::cpu::fast_exp(0.0f), 1.0f);
  for (float z : {-30.0f, -3.0f, -0.5f, 0.0f, 0.7f, 4.0f, 40.0f}) {
    EXPECT_NEAR(moe::kernels::cpu::fast_silu(z), z / (1 + std::exp(-double(z))), 2e-7 * std::max(1.0f, std::abs(z)));
    const double s = 1 / (1 + std::exp(-double(z)));
    EXPECT_NEAR(moe::kernels::cpu::fast_silu_grad(z), s * (1 + z * (1 - s)), 3e-7 * std::max(1.0f, std::abs(z)));
  }
}

// The CPU's tanh GELU is z·sigmoid(2u); the reference is the definition's tanh form in
// float64, and its derivative by the product and chain rules.
TEST(CpuFastMath, TanhGeluAndItsGradientAgainstTheDefinition) {
  const double pi = 3.14159265358979323846, scale = std::sqrt(2 / pi), cubic = 0.044715;
  double worst = 0, worst_grad = 0;
  for (float z = -12.0f; z < 12.0f; z += 0.00731f) {
    const double u = scale * (z + cubic * double(z) * z * z), t = std::tanh(u);
    const double gelu = 0.5 * z * (1 + t);
    const double grad = 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * scale * (1 + 3 * cubic * double(z) * z);
    const double size = std::max(1.0, std::abs(double(z)));
    worst = std::max(worst, std::abs(moe::kernels::cpu::fast_gelu_tanh(z) - gelu) / size);
    worst_grad = std::max(worst_grad, std::abs(moe::kernels::cpu::fast_gelu_tanh_grad(z) - grad) / size);
  }
  EXPECT_LE(worst, 3e-7) << "error over max(1, |z|)";
  EXPECT_LE(worst_grad, 5e-7) << "error over max(1, |z|)";
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(moe::kernels::cpu::fast_gelu_tanh(1e20f), 1e20f);
  EXPECT_EQ(moe::kernels::cpu::fast_gelu_tanh(-1e20f), 0.0f);
  EXPECT_EQ(moe::kernels::cpu::fast_gelu_tanh_grad(1e20f), 1.0f) << "z² overflows; the slope is 1";
  EXPECT_EQ(moe::kernels::cpu::fast_gelu_tanh_grad(-1e20f), 0.0f);
  EXPECT_EQ(moe::kernels::cpu::fast_gelu_tanh(inf), inf);
  EXPECT_TRUE(std::isnan(moe::kernels::cpu::fast_gelu_tanh(std::nanf(""))));
  EXPECT_TRUE(std::isnan(moe::kernels::cpu::fast_gelu_tanh_grad(std::nanf(""))));
}

// The exact GELU, z·Φ(z), and its slope Φ(z) + z·φ(z), against float64 erfc and exp:
// the error within 2e-7 (slope 3e-7) of max(1, |z|); for negative z, where z·Φ(z) is
// small and 1 + erf(z/√2) cancels (the erff form is wholly wrong past z = −5), within
// 1e-6 of the value itself down to z = −5 and 5e-6 down to z = −13 (measured 7.4e-7 and
// 4.0e-6: z²/2 is rounded to float, so the tail's relative error grows as z²).
TEST(CpuFastMath, ExactGeluAndItsGradientAgainstTheDefinition) {
  using moe::kernels::cpu::fast_gelu;
  using moe::kernels::cpu::fast_gelu_grad;
  const double pi = 3.14159265358979323846;
  double worst = 0, worst_grad = 0, worst_tail = 0, worst_far_tail = 0;
  for (float z = -14.0f; z < 14.0f; z += 0.000731f) {
    const double cdf = 0.5 * std::erfc(-double(z) / std::sqrt(2.0));
    const double density = std::exp(-0.5 * double(z) * z) / std::sqrt(2 * pi);
    const double gelu = z * cdf, grad = cdf + z * density;
    const double size = std::max(1.0, std::abs(double(z)));
    worst = std::max(worst, std::abs(fast_gelu(z) - gelu) / size);
    worst_grad = std::max(worst_grad, std::abs(fast_gelu_grad(z) - grad) / size);
    if (z < 0.0f && z >= -13.0f) {
      const double relative = std::abs(fast_gelu(z) - gelu) / std::abs(gelu);
      double& band = z >= -5.0f ? worst_tail : worst_far_tail;
      band = std::max(band, relative);
    }
  }
  EXPECT_LE(worst, 2e-7) << "error over max(1, |z|)";
  EXPECT_LE(worst_grad, 3e-7) << "error over max(1, |z|)";
  EXPECT_LE(worst_tail, 1e-6) << "relative error for z in [-5, 0)";
  EXPECT_LE(worst_far_tail, 5e-6) << "relative error for z in [-13, -5)";
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(fast_gelu(0.0f), 0.0f);
  EXPECT_EQ(fast_gelu(1e20f), 1e20f);
  EXPECT_EQ(fast_gelu(-1e20f), 0.0f);
  EXPECT_EQ(fast_gelu_grad(1e20f), 1.0f) << "z² overflows; the slope is 1";
  EXPECT_EQ(fast_gelu_grad(-1e20f), 0.0f);
  EXPECT_EQ(fast_gelu(inf), inf);
  EXPECT_TRUE(std::isnan(fast_gelu(std::nanf(""))));
  EXPECT_TRUE(std::isnan(fast_gelu_grad(std::nanf(""))));
}

TEST(CpuActivations, NaNInGivesNaNOutForEveryActivationAndItsGradient) {
  const float nan = std::nanf("");
  for (Act act : {Act::ReLU, Act::GELU, Act::SiLU, Act::GELUTanh}) {
    EXPECT_TRUE(std::isnan(moe::kernels::activate(act, nan))) << int(act);
    EXPECT_TRUE(std::isnan(moe::kernels::activate_grad(act, nan))) << int(act);
    std::vector<float> z = {nan, -1.0f, 2.0f}, out(3);
    ops->linear(z.data(), 3, 1, std::vector<float>{1.0f}.data(), 1, nullptr, act, nullptr, out.data());
    EXPECT_TRUE(std::isnan(out[0])) << int(act);
    EXPECT_NEAR(out[2], reference_activation(act, 2.0), 1e-6) << int(act);
  }
}

TEST(CpuLinear, BiasActivationAndPreActivation) {
  for (Act act : {Act::Identity, Act::ReLU, Act::GELU, Act::SiLU, Act::GELUTanh}) {
    const std::int64_t n = 45, K = 70, N = 130;
    std::vector<float> x(n * K), w(K * N), bias(N), pre(n * N), out(n * N);
    fill_normal(x.data(), n * K, 1.0, 4);
    fill_normal(w.data(), K * N, 0.2, 5);
    fill_normal(bias.data(), N, 1.0, 6);
    ops->linear(x.data(), n, K, w.data(), N, bias.data(), act, pre.data(), out.data());
    std::vector<double> ref_pre(n * N), ref_out(n * N);
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t c = 0; c < N; ++c) {
        double z = bias[c];
        for (std::int64_t l = 0; l < K; ++l) z += double(x[r * K + l]) * w[l * N + c];
        ref_pre[r * N + c] = z;
        ref_out[r * N + c] = reference_activation(act, z);
      }
    EXPECT_LE(relative_error(pre.data(), ref_pre.data(), n * N), 1e-5) << int(act);
    EXPECT_LE(relative_error(out.data(), ref_out.data(), n * N), 1e-5) << int(act);
    // Without pre_act, in one buffer; without bias.
    std::vector<float> out2(n * N);
    ops->linear(x.data(), n, K, w.data(), N, bias.data(), act, nullptr, out2.data());
    EXPECT_EQ(out2, out);
    ops->linear(x.data(), n, K, w.data(), N, nullptr, Act::Identity, nullptr, out2.data());
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t c = 0; c < N; ++c) ref_pre[r * N + c] -= bias[c];
    EXPECT_LE(relative_error(out2.data(), ref_pre.data(), n * N), 1e-5);
  }
}

// Ops::expert_ffn: every group's FFN (ffn or glu, with and without biases) against a
// float64 loop, with 1, 2 and 3 threads so that the CPU's per-thread row ranges cut
// groups in different places, an empty group included; and the default (grouped_linear,
// glu, grouped_linear) that the CUDA backend runs, on the same batch.
class CpuExpertFfn : public ::testing::TestWithParam<std::tuple<bool, bool, int>> {};

void expect_expert_ffn_matches_float64(const std::vector<std::int64_t>& offsets, bool gated, bool with_bias) {
  const std::int64_t rows = offsets.back(), H = 64, F = 96, GF = gated ? 2 * F : F;
  const std::size_t groups = offsets.size() - 1;
  std::vector<float> x(rows * H), w_in(groups * H * GF), b_in(groups * GF), w_out(groups * F * H), b_out(groups * H);
  fill_normal(x.data(), std::int64_t(x.size()), 1.0, 21);
  fill_normal(w_in.data(), std::int64_t(w_in.size()), 0.3, 22);
  fill_normal(b_in.data(), std::int64_t(b_in.size()), 0.5, 23);
  fill_normal(w_out.data(), std::int64_t(w_out.size()), 0.2, 24);
  fill_normal(b_out.data(), std::int64_t(b_out.size()), 0.5, 25);
  const Act act = gated ? Act::SiLU : Act::GELU;
  moe::kernels::ExpertBatch batch;
  batch.x = x.data();
  batch.row_offsets = offsets;
  batch.in_dim = H, batch.width = F, batch.gated = gated, batch.act = act;
  moe::testing::point_at_experts(batch, groups, w_in.data(), w_out.data(), with_bias ? b_in.data() : nullptr,
                                 with_bias ? b_out.data() : nullptr);
  // The reference, from the definition (docs/design.md §1b).
  const std::int64_t first = offsets.front(), n = rows - first;
  const moe::testing::ExpertReference ref = moe::testing::reference_expert_ffn(batch);
  for (bool fused : {true, false}) {
    std::vector<float> pre(rows * GF), hidden(rows * F), out(rows * H);
    if (fused)
      ops->expert_ffn(batch, pre.data(), hidden.data(), out.data());
    else
      ops->moe::kernels::Ops::expert_ffn(batch, pre.data(), hidden.data(), out.data());
    const char* which = fused ? "the CPU's" : "the default";
    EXPECT_LE(relative_error(pre.data() + first * GF, ref.pre.data(), n * GF), 1e-5) << which;
    EXPECT_LE(relative_error(hidden.data() + first * F, ref.hidden.data(), n * F), 1e-5) << which;
    EXPECT_LE(relative_error(out.data() + first * H, ref.out.data(), n * H), 1e-5) << which;
    if (!gated) {  // ffn may go without pre: the same output
      std::vector<float> out2(rows * H), hidden2(rows * F);
      if (fused)
        ops->expert_ffn(batch, nullptr, hidden2.data(), out2.data());
      else
        ops->moe::kernels::Ops::expert_ffn(batch, nullptr, hidden2.data(), out2.data());
      EXPECT_EQ(out2, out) << which;
    }
  }
}

TEST_P(CpuExpertFfn, MatchesFloat64WhereverTheThreadRangesCut) {
  const auto [gated, with_bias, threads] = GetParam();
  omp_set_num_threads(threads);
  // Rows 0–2 are not in the batch, and an empty group; then one group alone (the shared
  // expert, which the default runs as plain linears).
  for (const std::vector<std::int64_t>& offsets : {std::vector<std::int64_t>{3, 40, 40, 177, 178, 310},
                                                   std::vector<std::int64_t>{3, 310}}) {
    SCOPED_TRACE(std::to_string(offsets.size() - 1) + " groups");
    expect_expert_ffn_matches_float64(offsets, gated, with_bias);
  }
  omp_set_num_threads(omp_get_num_procs());
}

INSTANTIATE_TEST_SUITE_P(KindsBiasesAndThreads, CpuExpertFfn,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool(), ::testing::Values(1, 2, 3)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "glu" : "ffn") +
                                  (std::get<1>(info.param) ? "_bias" : "_no_bias") + "_threads" +
                                  std::to_string(std::get<2>(info.param));
                         });

// The shared definition (kernels/activation.hpp, the GPU's): the erf GELU through
// erfcf, against float64, within 2e-7 of max(1, |z|) (value and slope) and, for
// negative z, relative error 2e-6 down to z = −5 and 2e-5 down to −13 (measured 1.3e-6
// and 1.2e-5; z/√2 is rounded to float). Through 1 + erff it returned 0 past z = −5.
TEST(ActivationDefinition, ExactGeluKeepsItsNegativeTail) {
  const double pi = 3.14159265358979323846;
  double worst = 0, worst_grad = 0, worst_tail = 0, worst_far_tail = 0;
  for (float z = -13.0f; z < 13.0f; z += 0.000731f) {
    const double cdf = 0.5 * std::erfc(-double(z) / std::sqrt(2.0));
    const double gelu = z * cdf, grad = cdf + z * std::exp(-0.5 * double(z) * z) / std::sqrt(2 * pi);
    const double size = std::max(1.0, std::abs(double(z)));
    worst = std::max(worst, std::abs(moe::kernels::activate(Act::GELU, z) - gelu) / size);
    worst_grad = std::max(worst_grad, std::abs(moe::kernels::activate_grad(Act::GELU, z) - grad) / size);
    if (z < 0.0f) {
      double& band = z >= -5.0f ? worst_tail : worst_far_tail;
      band = std::max(band, std::abs(moe::kernels::activate(Act::GELU, z) - gelu) / std::abs(gelu));
    }
  }
  EXPECT_LE(worst, 2e-7) << "error over max(1, |z|)";
  EXPECT_LE(worst_grad, 2e-7) << "error over max(1, |z|)";
  EXPECT_LE(worst_tail, 2e-6) << "relative error for z in [-5, 0)";
  EXPECT_LE(worst_far_tail, 2e-5) << "relative error for z in [-13, -5)";
}

TEST(ActivationGrad, MatchesCentralDifferences) {
  for (Act act : {Act::Identity, Act::ReLU, Act::GELU, Act::SiLU, Act::GELUTanh})
    for (float z : {-3.0f, -0.7f, 0.3f, 1.9f}) {
      const double h = 1e-3;
      const double numeric = (double(moe::kernels::activate(act, float(z + h))) -
                              double(moe::kernels::activate(act, float(z - h)))) / (2 * h);
      EXPECT_NEAR(moe::kernels::activate_grad(act, z), numeric, 2e-3) << int(act) << " at " << z;
    }
}

// activation_backward over more than one of its runs, written over ∂L/∂h as the layer
// calls it, against each activation's derivative from its definition: a central
// difference of the float64 activation, 1 for the identity, and for the ReLU 1 above
// zero and 0 at or below it (the subgradient the library takes at 0). Random signs, so
// a per-element branch would go both ways; NaN in ∂L/∂h, or in z where the slope
// depends on it, gives NaN.
TEST(CpuActivationBackward, IsTheDerivativeTimesTheGradientElementByElement) {
  const std::int64_t n = 3 * 4096 + 77;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> z(static_cast<std::size_t>(n)), dh(z.size());
  for (std::size_t i = 0; i < z.size(); ++i) z[i] = normal(rng), dh[i] = normal(rng);
  z[5] = 0.0f, z[6] = -0.0f, z[7] = std::nanf(""), dh[8] = std::nanf(""), z[9] = 1e-30f, z[10] = -1e-30f;
  for (Act act : {Act::Identity, Act::ReLU, Act::GELU, Act::SiLU, Act::GELUTanh}) {
    std::vector<float> dz = dh;
    ops->activation_backward(z.data(), dz.data(), n, act, dz.data());
    for (std::size_t i = 0; i < z.size(); ++i) {
      const double zi = z[i];
      if ((std::isnan(zi) && act != Act::Identity) || std::isnan(dh[i])) {  // the identity's slope is 1 anywhere
        EXPECT_TRUE(std::isnan(dz[i])) << int(act) << " at " << i;
        continue;
      }
      double slope = 0.0;
      if (act == Act::Identity) {
        slope = 1.0;
      } else if (act == Act::ReLU) {
        slope = zi > 0 ? 1.0 : 0.0;
      } else {
        const double h = 1e-5;
        slope = (reference_activation(act, zi + h) - reference_activation(act, zi - h)) / (2 * h);
      }
      const double expected = dh[i] * slope;
      if (act == Act::ReLU || act == Act::Identity)
        ASSERT_EQ(dz[i], expected) << int(act) << " at z = " << zi;
      else
        ASSERT_NEAR(dz[i], expected, 2e-6 * std::max(1.0, std::abs(double(dh[i])))) << int(act) << " at z = " << zi;
    }
  }
}

// glu and glu_backward for every activation, rows longer than a vector and not a
// multiple of one, against float64: h = act(g)·u, ∂L/∂g = ∂L/∂h·u·act'(g) (act' a
// central difference of the float64 activation) and ∂L/∂u = ∂L/∂h·act(g).
TEST(CpuGlu, ForwardAndBackwardForEveryActivation) {
  const std::int64_t n = 7, F = 301;
  std::vector<float> z(n * 2 * F), dh(n * F), h(n * F), dz(n * 2 * F);
  fill_normal(z.data(), n * 2 * F, 2.0, 21);
  fill_normal(dh.data(), n * F, 1.0, 22);
  for (Act act : {Act::Identity, Act::ReLU, Act::GELU, Act::SiLU, Act::GELUTanh}) {
    ops->glu(z.data(), n, F, act, h.data());
    ops->glu_backward(z.data(), dh.data(), n, F, act, dz.data());
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t c = 0; c < F; ++c) {
        const double g = z[r * 2 * F + c], u = z[r * 2 * F + F + c], d = dh[r * F + c], step = 1e-5;
        const double slope = act == Act::ReLU ? (g > 0 ? 1.0 : 0.0)
                                              : (reference_activation(act, g + step) -
                                                 reference_activation(act, g - step)) / (2 * step);
        // 2e-6 of each product's size: the activations' own error (fast_math.hpp) is below 5e-7 of max(1, |g|).
        const double size = 2e-6 * std::max(1.0, std::abs(g));
        ASSERT_NEAR(h[r * F + c], reference_activation(act, g) * u, size * std::max(1.0, std::abs(u)))
            << int(act) << " at g = " << g;
        ASSERT_NEAR(dz[r * 2 * F + c], d * u * slope, size * std::max(1.0, std::abs(u * d)))
            << int(act) << " at g = " << g;
        ASSERT_NEAR(dz[r * 2 * F + F + c], d * reference_activation(act, g), size * std::max(1.0, std::abs(d)))
            << int(act) << " at g = " << g;
      }
  }
}

TEST(CpuSoftmaxTopk, MatchesFloat64RowByRow) {
  const std::int64_t T = 37;
  const int E = 12, k = 4;
  std::vector<float> logits(T * E), probs(T * E), weights(T * k), lse(T);
  std::vector<std::int32_t> indices(T * k);
  fill_normal(logits.data(), T * E, 3.0, 7);
  moe::kernels::RouterParams params;
  params.num_experts = E, params.top_k = k;
  ops->route(logits.data(), T, params, nullptr, probs.data(), indices.data(), weights.data(), lse.data());
  for (std::int64_t t = 0; t < T; ++t) {
    const float* l = &logits[t * E];
    double mx = *std::max_element(l, l + E), sum = 0;
    for (int e = 0; e < E; ++e) sum += std::exp(double(l[e]) - mx);
    EXPECT_NEAR(lse[t], mx + std::log(sum), 1e-5 * std::abs(mx + std::log(sum)) + 1e-6);
    std::vector<double> p(E);
    for (int e = 0; e < E; ++e) p[e] = std::exp(double(l[e]) - mx) / sum;
    EXPECT_LE(relative_error(&probs[t * E], p.data(), E), 1e-5);
    std::vector<int> order(E);
    for (int e = 0; e < E; ++e) order[e] = e;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
    double sel = 0;
    for (int j = 0; j < k; ++j) sel += p[order[j]];
    for (int j = 0; j < k; ++j) {
      EXPECT_EQ(indices[t * k + j], order[j]);
      EXPECT_NEAR(weights[t * k + j], p[order[j]] / sel, 1e-6);
    }
  }
}

TEST(RouterRow, NaNRanksBelowEveryNumber) {
  const float nan = std::nanf("");
  float logits[4] = {0.0f, 1.0f, 2.0f, 3.0f}, probs[4], w[2];
  std::int32_t idx[2];
  logits[3] = nan;  // one NaN logit makes the whole row NaN after normalisation
  moe::kernels::RouterParams params;
  params.num_experts = 4, params.top_k = 2;
  moe::kernels::route_row(logits, params, nullptr, probs, idx, w);
  EXPECT_EQ(idx[0], 0);
  EXPECT_EQ(idx[1], 1);
  EXPECT_TRUE(std::isnan(w[0]));
  EXPECT_TRUE(moe::kernels::ranks_above(1.0f, nan));
  EXPECT_FALSE(moe::kernels::ranks_above(nan, 1.0f));
  EXPECT_FALSE(moe::kernels::ranks_above(1.0f, 1.0f));
}

TEST(RouterRow, TopKIsTheDefinitionsOrderAtAnyExpertCount) {
  // select_top_k against its definition: the allowed experts in descending score, NaN
  // last, ties to the lower index; the first k. Scores on a coarse grid make ties;
  // up to 64 experts the chosen ones are a bit mask, beyond a look through the choices.
  const float nan = std::nanf("");
  std::uint64_t state = 99;
  auto uniform = [&] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<double>(state >> 11) / 9007199254740992.0;
  };
  for (const int E : {12, 63, 64, 65, 200})
    for (const int k : {1, 4, 8})
      for (const int n_group : {1, 4})
        for (int row = 0; row < 20; ++row) {
          SCOPED_TRACE(::testing::Message() << "E=" << E << " k=" << k << " groups " << n_group << " row " << row);
          moe::kernels::RouterParams p;
          p.num_experts = E, p.top_k = k, p.n_group = n_group, p.topk_group = n_group > 1 ? 2 : 1;
          std::vector<float> scores(E), bias(E);
          for (int e = 0; e < E; ++e) {
            scores[e] = static_cast<float>(std::floor(uniform() * 8.0) / 4.0);  // 8 values: many ties
            bias[e] = static_cast<float>(std::floor(uniform() * 3.0) / 8.0);
          }
          if (row % 5 == 0) scores[static_cast<std::size_t>(row % E)] = nan;
          const float* b = n_group > 1 ? bias.data() : nullptr;
          const std::uint64_t allowed = moe::kernels::allowed_groups(scores.data(), b, p);
          std::vector<int> candidates;
          for (int e = 0; e < E; ++e)
            if (allowed >> (e / (E / n_group)) & 1u) candidates.push_back(e);
          auto score = [&](int e) { return scores[e] + (b ? b[e] : 0.0f); };
          std::stable_sort(candidates.begin(), candidates.end(), [&](int x, int y) {
            if (std::isnan(score(x))) return false;
            if (std::isnan(score(y))) return true;
            return score(x) > score(y);
          });
          std::vector<std::int32_t> got(static_cast<std::size_t>(k), -7);
          moe::kernels::select_top_k(scores.data(), b, p, got.data());
          for (int j = 0; j < k; ++j)
            EXPECT_EQ(got[j], j < static_cast<int>(candidates.size()) ? candidates[j] : -1) << "choice " << j;
        }
}

TEST(CpuRows, GatherAndCombine) {
  const std::int64_t W = 19;
  std::vector<float> src(6 * W);
  fill_normal(src.data(), 6 * W, 1.0, 8);
  // -1 is a padding row: zeros, whatever the destination held.
  const std::vector<std::int32_t> rows = {5, 0, -1, 0, 3};
  std::vector<float> gathered(5 * W, std::nanf(""));
  ops->gather_rows(src.data(), rows.data(), 5, W, gathered.data());
  for (int i = 0; i < 5; ++i)
    for (int h = 0; h < W; ++h) EXPECT_EQ(gathered[i * W + h], rows[i] < 0 ? 0.0f : src[rows[i] * W + h]);

  // Row 0 ← 0.5·src[1] + 2·src[4]; row 1 empty → zeros; row 2 ← −1·src[5].
  const std::vector<std::int32_t> offsets = {0, 2, 2, 3}, sources = {1, 4, 5};
  const std::vector<float> weights = {0.5f, 2.0f, -1.0f};
  std::vector<float> out(3 * W, 9.0f);
  ops->combine_rows(src.data(), W, 3, offsets.data(), sources.data(), weights.data(), out.data());
  for (int h = 0; h < W; ++h) {
    EXPECT_NEAR(out[h], 0.5 * src[W + h] + 2.0 * src[4 * W + h], 1e-6);
    EXPECT_EQ(out[W + h], 0.0f);
    EXPECT_EQ(out[2 * W + h], -src[5 * W + h]);
  }
  ops->combine_rows(src.data(), W, 3, offsets.data(), sources.data(), nullptr, out.data());
  for (int h = 0; h < W; ++h) EXPECT_NEAR(out[h], src[W + h] + src[4 * W + h], 1e-6);
}

TEST(CpuRows, GatherExpertFfnIsAGatherThenTheFfn) {
  // Rows 2.. of the batch (rows 0-1 untouched), three experts, a padding row (-1) and a
  // source row taken twice: gather_expert_ffn writes the gathered rows and the FFN of
  // them, bit for bit what gather_rows and then expert_ffn give.
  const std::int64_t H = 12, F = 20, T = 7;
  const std::vector<std::int64_t> offsets = {2, 5, 5, 9};
  const std::vector<std::int32_t> rows = {-9, -9, 6, 0, 0, 3, -1, 1, 4};
  std::vector<float> src(T * H), w_in(3 * H * F), w_out(3 * F * H), b_in(3 * F);
  fill_normal(src.data(), T * H, 1.0, 61);
  fill_normal(w_in.data(), std::int64_t(w_in.size()), 0.3, 62);
  fill_normal(w_out.data(), std::int64_t(w_out.size()), 0.3, 63);
  fill_normal(b_in.data(), std::int64_t(b_in.size()), 0.5, 64);
  moe::kernels::ExpertBatch batch;
  batch.row_offsets = offsets, batch.in_dim = H, batch.width = F, batch.act = Act::GELU;
  moe::testing::point_at_experts(batch, 3, w_in.data(), w_out.data(), b_in.data());
  const std::size_t n = rows.size();
  std::vector<float> gathered(n * H, 7.0f), pre(n * F), hidden(n * F), out(n * H);
  ops->gather_expert_ffn(src.data(), rows.data(), gathered.data(), batch, pre.data(), hidden.data(), out.data());

  std::vector<float> want_gathered(n * H, 7.0f), want_pre(n * F), want_hidden(n * F), want_out(n * H);
  ops->gather_rows(src.data(), rows.data() + 2, std::int64_t(n) - 2, H, want_gathered.data() + 2 * H);
  batch.x = want_gathered.data();
  ops->expert_ffn(batch, want_pre.data(), want_hidden.data(), want_out.data());
  EXPECT_EQ(gathered, want_gathered);
  EXPECT_EQ(pre, want_pre);
  EXPECT_EQ(hidden, want_hidden);
  EXPECT_EQ(out, want_out);
}

TEST(CpuColumnSums, Float64AndIndependentOfThreadCount) {
  const std::int64_t rows = 5000, cols = 7;
  std::vector<float> m(rows * cols);
  fill_normal(m.data(), rows * cols, 1.0, 9);
  std::vector<double> ref(cols, 0.0);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) ref[c] += m[r * cols + c];
  std::vector<double> one(cols), two(cols);
  omp_set_num_threads(1);
  ops->column_sums_later(m.data(), rows, cols, one.data());
  omp_set_num_threads(2);
  ops->column_sums_later(m.data(), rows, cols, two.data());
  EXPECT_EQ(one, two);
  for (std::int64_t c = 0; c < cols; ++c) EXPECT_NEAR(one[c], ref[c], 1e-9);
}

// Guards on two threads with overlapping lives, as a teacher labelling ahead and the
// student's step hold them: OpenBLAS stays at one thread until the last guard ends,
// whichever thread's guard ends first, and then has the caller's setting back.
TEST(SingleThreadedBlas, TheLastGuardOnAnyThreadRestoresTheCallersSetting) {
  using moe::kernels::cpu::blas_thread_setting;
  using moe::kernels::cpu::SingleThreadedBlas;
  if (blas_thread_setting() == 0) GTEST_SKIP() << "this BLAS has no thread setting";
  const int before = blas_thread_setting();
  moe::kernels::cpu::set_blas_thread_setting(3);
  auto first = std::make_unique<SingleThreadedBlas>();
  EXPECT_EQ(blas_thread_setting(), 1);
  std::promise<void> second_made, first_gone;
  std::thread other([&] {
    SingleThreadedBlas second;
    second_made.set_value();
    first_gone.get_future().wait();
    EXPECT_EQ(blas_thread_setting(), 1) << "the first guard's end turned the threads on under the second";
  });
  second_made.get_future().wait();
  first.reset();
  first_gone.set_value();
  other.join();
  EXPECT_EQ(blas_thread_setting(), 3) << "the last guard's end did not restore the caller's setting";
  moe::kernels::cpu::set_blas_thread_setting(before);
}

// The squares of float32 values are exact in float64, so the reference's only error is
// its long double sum's. Lengths at the lane (8) and chunk (65 536) edges; the same bits
// at 1, 2 and 3 threads.
TEST(CpuSumSquares, Float64AndIndependentOfThreadCount) {
  for (const std::int64_t n : {0, 1, 7, 8, 9, 65536, 65537, 3 * 65536 + 13}) {
    std::vector<float> x(static_cast<std::size_t>(n));
    fill_normal(x.data(), n, 3.0, 12);
    long double ref = 0.0L;
    for (float v : x) ref += static_cast<long double>(v) * static_cast<long double>(v);
    std::vector<double> sums;
    const int threads_before = omp_get_max_threads();
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      sums.push_back(ops->sum_squares(x.data(), n));
    }
    omp_set_num_threads(threads_before);
    EXPECT_EQ(sums[0], sums[1]) << "n " << n;
    EXPECT_EQ(sums[0], sums[2]) << "n " << n;
    EXPECT_NEAR(sums[0], static_cast<double>(ref), 1e-13 * static_cast<double>(ref)) << "n " << n;
  }
}

}  // namespace

namespace {

TEST(SeededFill, EveryThreadCountGivesTheSerialValues) {
  // fill_uniform and fill_normal compute each draw from the stream's start, so that
  // large fills (a layer's experts, a training step's tokens) run in parallel: the
  // values must be those of one thread, bit for bit, an odd count included.
  const std::int64_t n = (std::int64_t{1} << 20) + 3;
  std::vector<float> serial_u(n), serial_n(n), u(n), v(n);
  omp_set_num_threads(1);
  moe::fill_uniform(serial_u.data(), n, 0.5f, 7, 3);
  moe::fill_normal(serial_n.data(), n, 7, 3);
  // The streams as defined (splitmix64 of Vigna: add 0x9E3779B97F4A7C15, then two
  // xor-shift-multiply rounds; a stream starts at mix(seed) ^ stream · 0xD1B54A32D192ED03;
  // 53 bits per uniform; Box–Muller on draws 2p, 2p + 1), drawn one after another as the
  // values always were, so checkpoints initialised before stay reproducible.
  auto mix = [](std::uint64_t& state) {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  std::uint64_t seed_state = 7;
  std::uint64_t state = mix(seed_state) ^ (std::uint64_t{3} * 0xD1B54A32D192ED03ull);
  const std::uint64_t start = state;
  auto uniform01 = [&] { return double(mix(state) >> 11) * 0x1.0p-53; };
  for (std::int64_t i = 0; i < n; ++i) {
    const float expected = float((2.0 * uniform01() - 1.0) * 0.5f);
    if (expected != serial_u[i]) FAIL() << "fill_uniform differs from its definition at " << i;
  }
  state = start;
  for (std::int64_t i = 0; i + 1 < n; i += 2) {
    const double r = std::sqrt(-2.0 * std::log(1.0 - uniform01())), angle = 6.283185307179586 * uniform01();
    if (float(r * std::cos(angle)) != serial_n[i] || float(r * std::sin(angle)) != serial_n[i + 1])
      FAIL() << "fill_normal differs from its definition at " << i;
  }
  for (const int threads : {2, 3}) {
    omp_set_num_threads(threads);
    moe::fill_uniform(u.data(), n, 0.5f, 7, 3);
    moe::fill_normal(v.data(), n, 7, 3);
    EXPECT_EQ(u, serial_u) << threads << " threads";
    EXPECT_EQ(v, serial_n) << threads << " threads";
  }
  omp_set_num_threads(omp_get_num_procs());
  // The ops' fill_normal (synthetic tokens made where the layer computes) is the same stream.
  std::vector<float> from_ops(n);
  ops->fill_normal(from_ops.data(), n, 7, 3);
  EXPECT_EQ(from_ops, serial_n);
  // And they are the distributions they claim: mean 0, spread as stated.
  double mean = 0, squares = 0, max_u = 0;
  for (std::int64_t i = 0; i < n; ++i) mean += serial_n[i], squares += double(serial_n[i]) * serial_n[i];
  for (float x : serial_u) max_u = std::max(max_u, double(std::fabs(x)));
  EXPECT_NEAR(mean / n, 0.0, 5e-3);
  EXPECT_NEAR(squares / n, 1.0, 5e-3);
  EXPECT_LE(max_u, 0.5);
  EXPECT_GT(max_u, 0.499);
}

}  // namespace
