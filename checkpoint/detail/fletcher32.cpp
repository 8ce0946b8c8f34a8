#include "checkpoint/detail/fletcher32.hpp"

#include <dlfcn.h>
#include <hdf5.h>

#include <cstring>
#include <utility>

namespace moe::hdf5 {
namespace {

std::uint32_t fold(std::uint32_t x) { return (x & 0xffff) + (x >> 16); }

// One block of n ≤ 360 big-endian 16-bit words: HDF5 adds each word to sum1 and then
// sum1 to sum2. Over the block that is sum1 += Σ v_i and sum2 += n·sum1 + Σ (n−i)·v_i,
// the same integers modulo 2^32 in any order, so the same bits as the word-by-word loop.
std::uint32_t word(const std::uint8_t* data, std::uint32_t i) {
  return (std::uint32_t(data[2 * i]) << 8) | data[2 * i + 1];
}

// A full block (n = 360 = 45 · 8) in 8 lanes: lane j sees words j, j+8, …; per lane,
// a += v and b += a give Σ v and Σ (45 − q)·v over its 45 words q, and
// Σ_i (360 − i)·v_i = Σ_j (8·b_j − j·a_j). Only additions in the loop: it vectorises.
__attribute__((target_clones("avx2", "default"))) void full_block_sums(const std::uint8_t* data, std::uint32_t& sum,
                                                                         std::uint32_t& weighted) {
  std::uint32_t a[8] = {}, b[8] = {};
  for (std::uint32_t q = 0; q < 45; ++q) {
    std::uint16_t raw[8];
    std::memcpy(raw, data + 16 * q, 16);
    for (int j = 0; j < 8; ++j) {
      a[j] += __builtin_bswap16(raw[j]);
      b[j] += a[j];
    }
  }
  std::uint32_t s = 0, w = 0;
  for (std::uint32_t j = 0; j < 8; ++j) {
    s += a[j];
    w += 8 * b[j] - j * a[j];
  }
  sum = s;
  weighted = w;
}

void block_sums(const std::uint8_t* data, std::uint32_t n, std::uint32_t& sum, std::uint32_t& weighted) {
  if (n == 360) return full_block_sums(data, sum, weighted);
  std::uint32_t s = 0, w = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    s += word(data, i);
    w += (n - i) * word(data, i);
  }
  sum = s;
  weighted = w;
}

constexpr std::size_t kChecksumBytes = 4;

void encode_little_endian(std::uint32_t v, unsigned char* out) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<unsigned char>(v >> (8 * i));
}

std::uint32_t decode_little_endian(const unsigned char* in) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | in[i];
  return v;
}

// The filter callback (H5Z_func_t). Writing: append the checksum, growing the buffer
// by 4 bytes in place. Reading: verify (unless error detection is off) and drop it.
std::size_t fletcher32_filter(unsigned int flags, std::size_t, const unsigned int[], std::size_t nbytes,
                              std::size_t* buf_size, void** buf) {
  if (flags & H5Z_FLAG_REVERSE) {
    if (nbytes < kChecksumBytes) return 0;
    const std::size_t data_bytes = nbytes - kChecksumBytes;
    if (!(flags & H5Z_FLAG_SKIP_EDC)) {
      auto* bytes = static_cast<unsigned char*>(*buf);
      const std::uint32_t stored = decode_little_endian(bytes + data_bytes);
      const std::uint32_t sum = fletcher32(bytes, data_bytes);
      // HDF5 before 1.6.3 stored the checksum with the bytes of each half swapped;
      // HDF5 accepts that form too, and so must we.
      unsigned char c[4];
      std::memcpy(c, &sum, 4);
      std::swap(c[0], c[1]);
      std::swap(c[2], c[3]);
      std::uint32_t reversed = 0;
      std::memcpy(&reversed, c, 4);
      if (stored != sum && stored != reversed) return 0;  // HDF5 reports the failure
    }
    return data_bytes;
  }
  if (*buf_size < nbytes + kChecksumBytes) {
    void* grown = H5resize_memory(*buf, nbytes + kChecksumBytes);
    if (!grown) return 0;
    *buf = grown;
    *buf_size = nbytes + kChecksumBytes;
  }
  auto* bytes = static_cast<unsigned char*>(*buf);
  encode_little_endian(fletcher32(bytes, nbytes), bytes + nbytes);
  return nbytes + kChecksumBytes;
}

}  // namespace

std::uint32_t fletcher32(const void* data, std::size_t bytes) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  std::size_t words = bytes / 2;
  std::uint32_t sum1 = 0, sum2 = 0;
  while (words) {
    const auto n = static_cast<std::uint32_t>(words > 360 ? 360 : words);
    words -= n;
    std::uint32_t s = 0, w = 0;
    block_sums(p, n, s, w);
    p += 2 * static_cast<std::size_t>(n);
    sum2 += n * sum1 + w;
    sum1 += s;
    sum1 = fold(sum1);
    sum2 = fold(sum2);
  }
  if (bytes % 2) {
    sum1 += std::uint32_t(*p) << 8;
    sum2 += sum1;
    sum1 = fold(sum1);
    sum2 = fold(sum2);
  }
  sum1 = fold(sum1);
  sum2 = fold(sum2);
  return (sum2 << 16) | sum1;
}

bool register_fast_fletcher32() {
  static const bool registered = [] {
    // H5Zregister refuses to replace a predefined filter; HDF5's own registration
    // function, H5Z_register, does not, and libhdf5 exports it. It is not public API,
    // so it is looked up at run time: where it is missing, HDF5's filter stays, which
    // computes the same checksums, only slower.
    using Register = herr_t (*)(const H5Z_class2_t*);
    const auto h5z_register = reinterpret_cast<Register>(dlsym(RTLD_DEFAULT, "H5Z_register"));
    if (!h5z_register) return false;
    static const H5Z_class2_t filter = {H5Z_CLASS_T_VERS, H5Z_FILTER_FLETCHER32, 1, 1, "fletcher32",
                                        nullptr, nullptr, fletcher32_filter};
    return h5z_register(&filter) >= 0;
  }();
  return registered;
}

}  // namespace moe::hdf5
