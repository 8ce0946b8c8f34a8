// Reading an HDF5 file moe did not write itself is reading untrusted bytes with
// libhdf5, and Debian's libhdf5 1.10.8 crashes, hangs or allocates gigabytes on some
// damaged files (a one-byte change to a checkpoint is enough: docs/reliability.md).
// moe cannot catch that inside its own process, so before a file is opened for reading
// a child process reads all of its metadata first, and the damage ends there.
#pragma once

#include <string>

namespace moe::hdf5 {

// Forks a child that opens `path` read-only and visits every object, attribute and
// dataset header in it (every attribute's value included, the datasets' data not).
// Throws moe::Error naming the file when the child is killed by a signal, exits with
// a failure (a sanitizer report) or runs past its time limit. A file the child cannot
// open passes: the caller's own open reports that, with HDF5's message. Every open is
// probed (milliseconds for a healthy file); a file found damaged (device, inode, size,
// modification time) gets its error again without a new probe.
void probe_untrusted_file(const std::string& path);

}  // namespace moe::hdf5
