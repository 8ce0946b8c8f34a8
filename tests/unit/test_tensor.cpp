#include <gtest/gtest.h>

#include "moe/layer.hpp"
#include "moe/tensor.hpp"
#include "support/test_util.hpp"

using moe::Tensor;

TEST(Tensor, ShapeAndZeroInitialisation) {
  Tensor<float> t({2, 3, 4});
  EXPECT_EQ(t.rank(), 3);
  EXPECT_EQ(t.dim(0), 2);
  EXPECT_EQ(t.dim(2), 4);
  EXPECT_EQ(t.numel(), 24);
  for (float v : t) EXPECT_EQ(v, 0.0f);
  Tensor<float> variadic(2, 3, 4);  // the reference API's spelling
  EXPECT_EQ(variadic.shape(), t.shape());
  Tensor<std::int32_t> one_dim(std::int64_t{5});
  EXPECT_EQ(one_dim.numel(), 5);
}

TEST(Tensor, CopiesAreDeepAndMovesSteal) {
  Tensor<float> a({3});
  a[1] = 7.0f;
  Tensor<float> b = a;
  b[1] = 8.0f;
  EXPECT_EQ(a[1], 7.0f);
  Tensor<float> c = std::move(b);
  EXPECT_EQ(c[1], 8.0f);
  EXPECT_EQ(c.shape(), std::vector<std::int64_t>{3});
}

TEST(Tensor, EmptyDimensionIsValid) {
  Tensor<float> t({0, 512});
  EXPECT_EQ(t.numel(), 0);
  EXPECT_TRUE(t.empty());
}

TEST(Tensor, BadShapesAndIndicesAreErrors) {
  EXPECT_MOE_ERROR(Tensor<float>({2, -1}), "[2, -1]", "negative");
  Tensor<float> t({2, 3});
  EXPECT_MOE_ERROR(t.dim(2), "i = 2", "[0, 2)");
  EXPECT_MOE_ERROR(t.reshape({4, 2}), "[4, 2]", "8 elements", "6");
  EXPECT_MOE_ERROR(Tensor<float>({2, 2}, std::vector<float>(3)), "3 elements", "expected 4");
  t.reshape({3, 2});
  EXPECT_EQ(t.dim(0), 3);
}

TEST(Tensor, ShapesBeyondMemoryAreErrorsNotCrashes) {
  EXPECT_MOE_ERROR(moe::Tensor<float>({std::int64_t{1} << 40, std::int64_t{1} << 40}), "overflows int64");
  EXPECT_MOE_ERROR(moe::Tensor<float>({std::int64_t{1} << 20, std::int64_t{1} << 20, 64}),
                   "Failed to allocate memory for a tensor of shape", "this machine has");
  EXPECT_EQ(moe::Tensor<float>({std::int64_t{1} << 62, 0}).numel(), 0);
}

TEST(Tensor, ALayerTooLargeForTheMachineIsAnErrorNamingTheSizes) {
  auto comm = moe::make_communicator(moe::CommBackend::Local);
  EXPECT_MOE_ERROR(moe::MoELayer(moe::MOEConfig(1000000, 2, 4096, 4096), *comm, 1),
                   "Failed to allocate memory for expert parameters", "1000000 experts");
}
