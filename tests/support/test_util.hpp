// Random inputs and error measures shared by the tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "moe/error.hpp"
#include "moe/tensor.hpp"

namespace moe::testing {

template <class T>
void fill_normal(T* data, std::int64_t n, double stddev, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, stddev);
  for (std::int64_t i = 0; i < n; ++i) data[i] = static_cast<T>(normal(rng));
}

// Top-k choices for T tokens over E experts as a plan sees them: k distinct experts per
// token (as top-k gives), skewed towards low ids so that a capacity drops some.
inline std::vector<std::int32_t> skewed_choices(std::int64_t T, std::int64_t k, std::int64_t E, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> out;
  for (std::int64_t t = 0; t < T; ++t) {
    std::vector<std::int32_t> row;
    while (static_cast<std::int64_t>(row.size()) < k) {
      const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
      const auto e = static_cast<std::int32_t>(static_cast<double>(E) * u * u);
      if (std::find(row.begin(), row.end(), e) == row.end()) row.push_back(e);
    }
    out.insert(out.end(), row.begin(), row.end());
  }
  return out;
}

inline Tensor<float> random_tensor(std::vector<std::int64_t> shape, double stddev, std::uint64_t seed) {
  Tensor<float> t(std::move(shape));
  fill_normal(t.data(), t.numel(), stddev, seed);
  return t;
}

// Gate weights [H, E] with random directions and every expert's column of norm `norm`:
// no expert is favoured for its column's length, so a router's loads stay near the
// mean (the padded layout then pads; docs/design.md §4b).
inline Tensor<float> gate_of_equal_columns(std::int64_t H, std::int64_t E, double norm, std::uint64_t seed) {
  Tensor<float> gate = random_tensor({H, E}, 1.0, seed);
  float* w = gate.data();
  for (std::int64_t e = 0; e < E; ++e) {
    double squares = 0.0;
    for (std::int64_t h = 0; h < H; ++h) squares += double(w[h * E + e]) * double(w[h * E + e]);
    for (std::int64_t h = 0; h < H; ++h) w[h * E + e] = static_cast<float>(norm * w[h * E + e] / std::sqrt(squares));
  }
  return gate;
}

// max |a - b| / max |b|: the normwise relative error, which stays meaningful where
// individual reference values are near zero. 0 for two empty arrays.
// A NaN on one side only is an infinite error (std::max would quietly skip it); NaN
// on both sides matches. With a floor, relative to max(floor, max |b|): for a
// reference that may be 0 in exact arithmetic, where both sides hold only rounding.
template <class A, class B>
double relative_error(const A* a, const B* b, std::int64_t n, double floor = 0) {
  double diff = 0, scale = floor;
  for (std::int64_t i = 0; i < n; ++i) {
    const bool nan_a = std::isnan(double(a[i])), nan_b = std::isnan(double(b[i]));
    if (nan_a != nan_b) return std::numeric_limits<double>::infinity();
    if (nan_a) continue;
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  if (scale == 0) return diff;
  return diff / scale;
}

// Expects `statement` to throw moe::Error whose message contains every fragment.
#define EXPECT_MOE_ERROR(statement, ...)                                              \
  do {                                                                                \
    try {                                                                             \
      statement;                                                                      \
      ADD_FAILURE() << "expected moe::Error from " #statement;                        \
    } catch (const ::moe::Error& error_) {                                            \
      const std::string message_ = error_.what();                                     \
      for (const char* fragment_ : {__VA_ARGS__})                                     \
        EXPECT_NE(message_.find(fragment_), std::string::npos)                        \
            << "message \"" << message_ << "\" lacks \"" << fragment_ << "\"";        \
    }                                                                                 \
  } while (0)

// Sets an environment variable for the scope of the object ("" unsets it), then puts
// back what was there (the library reads its switches, MOE_EXPERT_ROWS,
// MOE_SINGLE_RANK_PLAN, OMP_NUM_THREADS, …, when a layer or its ops are built).
class ScopedEnvironment {
 public:
  ScopedEnvironment(const char* name, const char* value) : name_(name) {
    if (const char* before = std::getenv(name)) before_ = before, was_set_ = true;
    if (*value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~ScopedEnvironment() {
    if (was_set_) ::setenv(name_, before_.c_str(), 1);
    else ::unsetenv(name_);
  }
  ScopedEnvironment(const ScopedEnvironment&) = delete;
  ScopedEnvironment& operator=(const ScopedEnvironment&) = delete;

 private:
  const char* name_;
  std::string before_;
  bool was_set_ = false;
};

}  // namespace moe::testing
