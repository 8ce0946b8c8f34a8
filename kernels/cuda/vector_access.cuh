// Loads and stores of V consecutive elements (V = 1, 4 or 8): 4 as one access (16 bytes
// of float, 8 of bf16), 8 as one access of bf16 (16 bytes) or two of float. The
// element-wise kernels over rows are templates on V: with one element a thread they ran
// at 1–2 TB/s of an H200's 4.8 (ncu, fine forward, 2026-11-27), so they take 4 a thread
// where the widths and pointers allow, and 8 since (vector_width): a block per row is
// bound by how long its threads wait for their loads, and more bytes a load is fewer
// rounds a row (8 not yet measured). The per-element arithmetic stays the shared one,
// applied to each of the V values.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "kernels/cuda/stream.cuh"

namespace moe::kernels::cuda {

struct alignas(8) Bf16x4 {
  __nv_bfloat162 lo, hi;
};
struct alignas(16) Bf16x8 {
  __nv_bfloat162 pair[4];
};

template <int V>
__device__ inline void load(const float* p, float (&v)[V]) {
  if constexpr (V == 8) {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else if constexpr (V == 4) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
  } else {
    for (int i = 0; i < V; ++i) v[i] = p[i];
  }
}

template <int V>
__device__ inline void load(const __nv_bfloat16* p, float (&v)[V]) {
  if constexpr (V == 8) {
    const Bf16x8 q = *reinterpret_cast<const Bf16x8*>(p);
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(q.pair[i]);
      v[2 * i] = f.x, v[2 * i + 1] = f.y;
    }
  } else if constexpr (V == 4) {
    const Bf16x4 q = *reinterpret_cast<const Bf16x4*>(p);
    const float2 lo = __bfloat1622float2(q.lo), hi = __bfloat1622float2(q.hi);
    v[0] = lo.x, v[1] = lo.y, v[2] = hi.x, v[3] = hi.y;
  } else {
    for (int i = 0; i < V; ++i) v[i] = __bfloat162float(p[i]);
  }
}

template <int V>
__device__ inline void store(float* p, const float (&v)[V]) {
  if constexpr (V == 8) {
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else if constexpr (V == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    for (int i = 0; i < V; ++i) p[i] = v[i];
  }
}

// Rounded to nearest even, as __float2bfloat16_rn.
template <int V>
__device__ inline void store(__nv_bfloat16* p, const float (&v)[V]) {
  if constexpr (V == 8) {
    Bf16x8 q;
    for (int i = 0; i < 4; ++i) q.pair[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
    *reinterpret_cast<Bf16x8*>(p) = q;
  } else if constexpr (V == 4) {
    *reinterpret_cast<Bf16x4*>(p) = Bf16x4{__floats2bfloat162_rn(v[0], v[1]), __floats2bfloat162_rn(v[2], v[3])};
  } else {
    for (int i = 0; i < V; ++i) p[i] = __float2bfloat16_rn(v[i]);
  }
}

// Whether every pointer (null ones ignored; each with its element's bytes) is aligned to
// v of its elements (cudaMalloc gives 256 bytes; an offset into an array may not).
inline bool starts_aligned(std::initializer_list<std::pair<const void*, int>> pointers, int v) {
  for (const auto& [p, element_bytes] : pointers)
    if (p && reinterpret_cast<std::uintptr_t>(p) % (static_cast<unsigned>(v) * static_cast<unsigned>(element_bytes)) != 0)
      return false;
  return true;
}

// Whether rows of `width` elements at these pointers can be read and written v elements
// at a time: the width a multiple of v and every pointer aligned to v of its elements.
inline bool vector_aligned(std::int64_t width, std::initializer_list<std::pair<const void*, int>> pointers,
                           int v = 4) {
  return width % v == 0 && starts_aligned(pointers, v);
}

// The most elements a thread can take at a time (8, 4 or 1) over rows of `width`
// elements at these pointers.
inline int vector_width(std::int64_t width, std::initializer_list<std::pair<const void*, int>> pointers) {
  return vector_aligned(width, pointers, 8) ? 8 : vector_aligned(width, pointers, 4) ? 4 : 1;
}

// Threads for a block per row of `width` elements taken v at a time: enough warps for
// one pass over the row, at most kBlock (wider rows take several). At the fine-grained
// config's 1 408-wide hidden rows, 8 a thread, that is 192 threads, where 256 left 80
// idle in every block, and more rows fit on a multiprocessor at once (not measured yet).
inline int row_threads(std::int64_t width, int v) {
  const std::int64_t warps = ((width + v - 1) / v + 31) / 32;
  return warps >= kBlock / 32 ? kBlock : warps < 1 ? 32 : static_cast<int>(32 * warps);
}

// launch(std::integral_constant<int, V>{}) for the V that vector_width gave: a kernel
// template instantiated at each width, picked at run time.
template <class Launch>
void at_vector_width(int v, Launch&& launch) {
  if (v == 8)
    launch(std::integral_constant<int, 8>{});
  else if (v == 4)
    launch(std::integral_constant<int, 4>{});
  else
    launch(std::integral_constant<int, 1>{});
}

}  // namespace moe::kernels::cuda
