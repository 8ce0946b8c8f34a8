// HDF5's Fletcher32 checksum filter, reimplemented: the same checksum bit for bit, but
// computed a block of 360 words at a time without a per-word dependency, and appended
// in place instead of into a new buffer with a second copy (measured: a 1 GB save
// went from 0.9 s to about 0.6 s, the cost of the filter being most of the gap to a
// plain write). Files stay readable, and verifiable, by any HDF5 tool.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moe::hdf5 {

// H5_checksum_fletcher32 of HDF5 1.10, exactly.
std::uint32_t fletcher32(const void* data, std::size_t bytes);

// Replaces HDF5's Fletcher32 filter for this process (once; idempotent). Returns
// false, leaving HDF5's own filter in place, where that cannot be done.
bool register_fast_fletcher32();

}  // namespace moe::hdf5
