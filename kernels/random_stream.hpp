// The counter-based random streams of moe's initialisation and synthetic data
// (src/initialization.hpp): splitmix64 named by (seed, stream). Its state advances by
// one constant per draw, so draw d is a function of the stream's start and d alone:
// CPU loops and CUDA kernels compute any element on its own, in parallel, and get the
// values of the serial loop. Shared by the CPU and the CUDA backend.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/host_device.hpp"

namespace moe::kernels {

constexpr std::uint64_t kSplitmixIncrement = 0x9E3779B97F4A7C15ull;

MOE_HD inline std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += kSplitmixIncrement);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The state before a stream's first draw.
MOE_HD inline std::uint64_t stream_start(std::uint64_t seed, std::uint64_t stream) {
  std::uint64_t state = seed;
  return splitmix64(state) ^ (stream * 0xD1B54A32D192ED03ull);
}

// Draw d of the stream (0-based) as a double in [0, 1), 53 random bits.
MOE_HD inline double unit_draw(std::uint64_t start, std::uint64_t d) {
  std::uint64_t state = start + d * kSplitmixIncrement;
  return static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53;
}

// Elements 2p and 2p + 1 of a standard normal stream (Box–Muller on draws 2p, 2p + 1);
// second is not written when null (an odd count's last pair).
MOE_HD inline void normal_pair(std::uint64_t start, std::uint64_t p, float* first, float* second) {
  const double r = sqrt(-2.0 * log(1.0 - unit_draw(start, 2 * p)));
  const double angle = 6.283185307179586 * unit_draw(start, 2 * p + 1);
  *first = static_cast<float>(r * cos(angle));
  if (second) *second = static_cast<float>(r * sin(angle));
}

// Elements [0, count) of the normal stream starting at `start` into host memory, the
// pairs in parallel on the CPU.
inline void fill_normal_on_host(float* out, std::int64_t count, std::uint64_t start) {
#pragma omp parallel for schedule(static) if (count > (std::int64_t{1} << 18))
  for (std::int64_t i = 0; i < count; i += 2)
    normal_pair(start, static_cast<std::uint64_t>(i / 2), out + i, i + 1 < count ? out + i + 1 : nullptr);
}

}  // namespace moe::kernels
