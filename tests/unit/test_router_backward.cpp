// One token's router backward (kernels/router_row.hpp router_backward_row), which the
// CPU ops and the CUDA kernels share, against the derivative of its definition: the
// loss Λ(l) = Σ_j ∂L/∂w_j · w_j(l) + Σ_e aux_e · probs_e(l) + z · lse(l)² / 2 with the
// selection held fixed (docs/design.md §1), in float64, by central differences.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/router_row.hpp"
#include "support/test_util.hpp"

using moe::kernels::RouterParams;

namespace {

struct Row {
  RouterParams p;
  std::vector<float> logits, probs, d_weights, aux;
  std::vector<std::int32_t> indices;
  float lse = 0, z = 0;
};

// A row routed as the layer routes it (route_row), its logits drawn around
// `logit_mean`, with random weight gradients, a dropped slot (gradient 0) when `drop`,
// and aux and z-loss terms when asked for.
Row make_row(const RouterParams& p, double logit_mean, double logit_stddev, std::uint64_t seed, bool drop,
             bool losses) {
  Row r;
  r.p = p;
  const int E = p.num_experts, k = p.top_k;
  r.logits.resize(E), r.probs.resize(E), r.indices.resize(k), r.d_weights.resize(k);
  moe::testing::fill_normal(r.logits.data(), E, logit_stddev, seed);
  for (float& l : r.logits) l += static_cast<float>(logit_mean);
  std::vector<float> weights(k);
  r.lse = moe::kernels::route_row(r.logits.data(), p, nullptr, r.probs.data(), r.indices.data(), weights.data());
  moe::testing::fill_normal(r.d_weights.data(), k, 1.0, seed + 1);
  if (drop) r.d_weights[k - 1] = 0.0f;
  if (losses) {
    r.aux.resize(E);
    moe::testing::fill_normal(r.aux.data(), E, 0.3, seed + 2);
    r.z = p.sigmoid ? 0.0f : 0.1f;  // the z-loss is the softmax router's
  }
  return r;
}

std::vector<float> backward(const Row& r) {
  std::vector<float> d(r.logits.size());
  moe::kernels::router_backward_row(r.logits.data(), r.probs.data(), r.indices.data(), r.d_weights.data(), r.lse, r.p,
                                    r.aux.empty() ? nullptr : r.aux.data(), r.z, d.data());
  return d;
}

// Λ at logits l, in float64, from the definitions: softmax or sigmoid scores, the
// selected ones normalised (plus the sigmoid router's ε) and scaled, probs = softmax or
// s / Σ s, lse = log Σ exp l.
double loss(const Row& r, const std::vector<double>& l) {
  const int E = r.p.num_experts, k = r.p.top_k;
  double max_l = l[0];
  for (double v : l) max_l = std::max(max_l, v);
  double sum_exp = 0;
  for (double v : l) sum_exp += std::exp(v - max_l);
  const double lse = max_l + std::log(sum_exp);
  std::vector<double> score(E), probs(E);
  double total = 0;
  for (int e = 0; e < E; ++e) {
    score[e] = r.p.sigmoid ? 1.0 / (1.0 + std::exp(-l[e])) : std::exp(l[e] - lse);
    total += score[e];
  }
  for (int e = 0; e < E; ++e) probs[e] = r.p.sigmoid ? score[e] / total : score[e];
  double selected = r.p.sigmoid ? double(moe::kernels::kSigmoidNormEps) : 0.0;
  for (int j = 0; j < k; ++j) selected += score[r.indices[j]];
  double value = r.z * lse * lse / 2;
  for (int j = 0; j < k; ++j) {
    const double a = score[r.indices[j]];
    value += r.d_weights[j] * r.p.scale * (r.p.normalize ? a / selected : a);
  }
  if (!r.aux.empty())
    for (int e = 0; e < E; ++e) value += r.aux[e] * probs[e];
  return value;
}

std::vector<double> central_differences(const Row& r) {
  std::vector<double> l(r.logits.begin(), r.logits.end()), grad(l.size());
  for (std::size_t e = 0; e < l.size(); ++e) {
    const double saved = l[e], step = 1e-6;
    l[e] = saved + step;
    const double up = loss(r, l);
    l[e] = saved - step;
    const double down = loss(r, l);
    l[e] = saved;
    grad[e] = (up - down) / (2 * step);
  }
  return grad;
}

RouterParams params(int E, int k, bool sigmoid, bool normalize, float scale) {
  RouterParams p;
  p.num_experts = E, p.top_k = k, p.sigmoid = sigmoid, p.normalize = normalize, p.scale = scale;
  return p;
}

}  // namespace

// With k = 1 normalised, the weight c · a / (a + ε) is the constant c (ε aside, whose
// part is below 1e-15 for these scores): the gate gets no gradient through it. The
// form ∂L/∂w − (∂L/∂w · a) / a left rounding noise, about ulp(∂L/∂w) · c, which the
// all-reduced gate gradients of the invariance tests showed as 1e-5 differences.
TEST(RouterBackward, ANormalisedTopOneWeightGivesTheLogitsNoGradient) {
  for (const bool sigmoid : {false, true})
    for (std::uint64_t seed = 0; seed < 200; ++seed) {
      const Row r = make_row(params(9, 1, sigmoid, true, 2.5f), 0.0, 2.0, 100 * seed, false, false);
      const std::vector<float> d = backward(r);
      for (int e = 0; e < 9; ++e)
        ASSERT_LE(std::abs(d[e]), 1e-15) << (sigmoid ? "sigmoid" : "softmax") << " seed " << seed << " logit " << e;
    }
}

TEST(RouterBackward, EqualsTheDerivativeOfTheWeightsAndLosses) {
  struct Case {
    int E, k;
    bool sigmoid, normalize, drop, losses;
    float scale;
    double logit_mean, logit_stddev;
  };
  const Case cases[] = {
      {8, 2, false, true, false, true, 1.0f, 0, 1.0},  {8, 2, true, true, true, true, 2.5f, 0, 2.0},
      {16, 4, false, true, true, false, 1.0f, 0, 3.0}, {16, 4, true, true, false, false, 1.5f, 0, 1.0},
      {6, 6, false, true, false, true, 1.0f, 0, 1.0},  {6, 6, true, true, true, true, 1.0f, 0, 1.0},
      {8, 3, false, false, false, true, 2.0f, 0, 1.0}, {8, 3, true, false, true, true, 2.0f, 0, 1.0},
      {5, 1, false, true, false, true, 1.0f, 0, 1.0},  {5, 1, true, true, false, true, 1.0f, 0, 4.0},
      // Sigmoid scores near 1e-20, where ε = 1e-20 moves the normalised weights.
      {4, 1, true, true, false, false, 1.0f, -46, 0.3}, {4, 2, true, true, false, false, 1.0f, -46, 0.3},
  };
  for (const Case& c : cases)
    for (std::uint64_t seed = 0; seed < 20; ++seed) {
      const Row r = make_row(params(c.E, c.k, c.sigmoid, c.normalize, c.scale), c.logit_mean, c.logit_stddev,
                             7 * seed + 3, c.drop, c.losses);
      const std::vector<float> got = backward(r);
      const std::vector<double> want = central_differences(r);
      // Float32 against float64 differences of step 1e-6 (their error about 1e-9).
      EXPECT_LE(moe::testing::relative_error(got.data(), want.data(), c.E, 1e-3), 2e-5)
          << "E " << c.E << " k " << c.k << (c.sigmoid ? " sigmoid" : " softmax")
          << (c.normalize ? " normalised" : " raw") << (c.drop ? " dropped slot" : "") << " seed " << seed;
    }
}
