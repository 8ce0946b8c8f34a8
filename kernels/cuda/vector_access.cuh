// Loads and stores of V consecutive elements (V = 1 or 4) as one memory access: 16 bytes
// of float, 8 of bf16. The element-wise kernels over rows are templates on V: with one
// element a thread they ran at 1–2 TB/s of an H200's 4.8 (ncu, fine forward, 2026-11-27),
// so they take 4 a thread where the widths and pointers allow (vector_aligned), and the
// per-element arithmetic stays the shared one, applied to each of the V values.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <initializer_list>
#include <utility>

namespace moe::kernels::cuda {

struct alignas(8) Bf16x4 {
  __nv_bfloat162 lo, hi;
};

template <int V>
__device__ inline void load(const float* p, float (&v)[V]) {
  if constexpr (V == 4) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
  } else {
    for (int i = 0; i < V; ++i) v[i] = p[i];
  }
}

template <int V>
__device__ inline void load(const __nv_bfloat16* p, float (&v)[V]) {
  if constexpr (V == 4) {
    const Bf16x4 q = *reinterpret_cast<const Bf16x4*>(p);
    const float2 lo = __bfloat1622float2(q.lo), hi = __bfloat1622float2(q.hi);
    v[0] = lo.x, v[1] = lo.y, v[2] = hi.x, v[3] = hi.y;
  } else {
    for (int i = 0; i < V; ++i) v[i] = __bfloat162float(p[i]);
  }
}

template <int V>
__device__ inline void store(float* p, const float (&v)[V]) {
  if constexpr (V == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    for (int i = 0; i < V; ++i) p[i] = v[i];
  }
}

// Rounded to nearest even, as __float2bfloat16_rn.
template <int V>
__device__ inline void store(__nv_bfloat16* p, const float (&v)[V]) {
  if constexpr (V == 4) {
    *reinterpret_cast<Bf16x4*>(p) = Bf16x4{__floats2bfloat162_rn(v[0], v[1]), __floats2bfloat162_rn(v[2], v[3])};
  } else {
    for (int i = 0; i < V; ++i) p[i] = __float2bfloat16_rn(v[i]);
  }
}

// Whether rows of `width` elements at these pointers (null ones ignored) can be read and
// written 4 elements at a time: the width a multiple of 4 and every pointer aligned to
// 4 of its elements (cudaMalloc gives 256 bytes; an offset into an array may not).
inline bool vector_aligned(std::int64_t width, std::initializer_list<std::pair<const void*, int>> pointers) {
  if (width % 4 != 0) return false;
  for (const auto& [p, element_bytes] : pointers)
    if (p && reinterpret_cast<std::uintptr_t>(p) % (4u * static_cast<unsigned>(element_bytes)) != 0) return false;
  return true;
}

}  // namespace moe::kernels::cuda
