#include "kernels/cuda/cuda_check.cuh"
#include "kernels/cuda/optimizer.cuh"
#include "kernels/cuda/vector_access.cuh"
#include "kernels/optimizer_math.hpp"

namespace moe::kernels::cuda {
namespace {

// The element-wise updates take V = 4 elements a thread (one 16-byte load of each
// array) where every array allows it, else one: an AdamW step reads four arrays and
// writes three, 28 bytes an element, over every parameter, so it is bound by how many
// bytes each load brings (vector_access.cuh). Each element is still the one function of
// kernels/optimizer_math.hpp: the same bits whatever V. The elements past the last
// whole vector (n mod V) go one a thread, after the vectors.
template <int V, class Element>
__device__ void for_each_element(std::int64_t n, const Element& element) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t vectors = n / V;
  for (std::int64_t i = first; i < vectors; i += stride) element(i * V, std::integral_constant<int, V>{});
  for (std::int64_t i = vectors * V + first; i < n; i += stride) element(i, std::integral_constant<int, 1>{});
}

template <int V>
__global__ void sgd_kernel(float* p, const float* g, float* m, std::int64_t n, float lr, float mu, float wd) {
  for_each_element<V>(n, [&](std::int64_t i, auto width) {
    constexpr int W = decltype(width)::value;
    float pv[W], gv[W], mv[W];
    load<W>(p + i, pv), load<W>(g + i, gv), load<W>(m + i, mv);
    for (int e = 0; e < W; ++e) sgd_element(pv[e], gv[e], mv[e], lr, mu, wd);
    store<W>(p + i, pv), store<W>(m + i, mv);
  });
}

template <int V>
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, std::int64_t n, float lr, float b1, float b2,
                             float eps, float wd, float c1, float c2) {
  for_each_element<V>(n, [&](std::int64_t i, auto width) {
    constexpr int W = decltype(width)::value;
    float pv[W], gv[W], mv[W], vv[W];
    load<W>(p + i, pv), load<W>(g + i, gv), load<W>(m + i, mv), load<W>(v + i, vv);
    for (int e = 0; e < W; ++e) adamw_element(pv[e], gv[e], mv[e], vv[e], lr, b1, b2, eps, wd, c1, c2);
    store<W>(p + i, pv), store<W>(m + i, mv), store<W>(v + i, vv);
  });
}

template <int V>
__global__ void add_kernel(float* x, const float* y, std::int64_t n) {
  for_each_element<V>(n, [&](std::int64_t i, auto width) {
    constexpr int W = decltype(width)::value;
    float xv[W], yv[W];
    load<W>(x + i, xv), load<W>(y + i, yv);
    for (int e = 0; e < W; ++e) xv[e] += yv[e];
    store<W>(x + i, xv);
  });
}

template <int V>
__global__ void scale_kernel(float* x, std::int64_t n, float s) {
  for_each_element<V>(n, [&](std::int64_t i, auto width) {
    constexpr int W = decltype(width)::value;
    float xv[W];
    load<W>(x + i, xv);
    for (int e = 0; e < W; ++e) xv[e] *= s;
    store<W>(x + i, xv);
  });
}

// kernel<V> over n float elements: V = 4 when every array starts on 16 bytes, else 1.
// The length needs no multiple of V (the remainder goes one a thread).
template <class Launch>
void launch_elementwise(std::int64_t n, std::initializer_list<std::pair<const void*, int>> arrays, Launch&& launch) {
  if (n == 0) return;
  const int v = starts_aligned(arrays, 4) ? 4 : 1;
  const unsigned blocks = blocks_for((n + v - 1) / v, kBlock);
  if (v == 4)
    launch(std::integral_constant<int, 4>{}, blocks);
  else
    launch(std::integral_constant<int, 1>{}, blocks);
  MOE_CHECK_LAUNCH();
}

}  // namespace

void launch_sgd(float* param, const float* grad, float* momentum, std::int64_t n, float lr, float mu,
                float weight_decay, Stream stream) {
  launch_elementwise(n, {{param, 4}, {grad, 4}, {momentum, 4}}, [&](auto v, unsigned blocks) {
    sgd_kernel<decltype(v)::value><<<blocks, kBlock, 0, stream>>>(param, grad, momentum, n, lr, mu, weight_decay);
  });
}

void launch_adamw(float* param, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float correction1, float correction2, Stream stream) {
  launch_elementwise(n, {{param, 4}, {grad, 4}, {m, 4}, {v, 4}}, [&](auto width, unsigned blocks) {
    adamw_kernel<decltype(width)::value><<<blocks, kBlock, 0, stream>>>(param, grad, m, v, n, lr, beta1, beta2, eps,
                                                                        weight_decay, correction1, correction2);
  });
}

void launch_add(float* x, const float* y, std::int64_t n, Stream stream) {
  launch_elementwise(n, {{x, 4}, {y, 4}}, [&](auto v, unsigned blocks) {
    add_kernel<decltype(v)::value><<<blocks, kBlock, 0, stream>>>(x, y, n);
  });
}

void launch_scale(float* x, std::int64_t n, float s, Stream stream) {
  launch_elementwise(n, {{x, 4}}, [&](auto v, unsigned blocks) {
    scale_kernel<decltype(v)::value><<<blocks, kBlock, 0, stream>>>(x, n, s);
  });
}

}  // namespace moe::kernels::cuda
