// Random inputs and error measures shared by the tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
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

inline Tensor<float> random_tensor(std::vector<std::int64_t> shape, double stddev, std::uint64_t seed) {
  Tensor<float> t(std::move(shape));
  fill_normal(t.data(), t.numel(), stddev, seed);
  return t;
}

// max |a - b| / max |b|: the normwise relative error, which stays meaningful where
// individual reference values are near zero. 0 for two empty arrays.
// A NaN on one side only is an infinite error (std::max would quietly skip it); NaN
// on both sides matches.
template <class A, class B>
double relative_error(const A* a, const B* b, std::int64_t n) {
  double diff = 0, scale = 0;
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

}  // namespace moe::testing
