// MOE_HD marks the per-row and per-element functions that the CPU ops and the CUDA
// kernels share, so their logic is written once and unit-tested on the CPU.
#pragma once

#if defined(__CUDACC__)
#define MOE_HD __host__ __device__
#else
#define MOE_HD
#endif
