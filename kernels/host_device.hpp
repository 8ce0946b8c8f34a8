// MOE_HD marks the per-row and per-element functions that the CPU ops and the CUDA
// kernels share, so their logic is written once and unit-tested on the CPU.
#pragma once

#if defined(__CUDACC__)
#define MOE_HD __host__ __device__
// Before a MOE_HD template that calls what it is given: the host passes host lambdas, a
// kernel device functors (the plan's steps, kernels/cuda/plan.cu). nvcc would check
// each instantiation for both sides; this checks only the side that calls it.
#define MOE_HD_CALLS_ARGUMENT _Pragma("nv_exec_check_disable")
#else
#define MOE_HD
#define MOE_HD_CALLS_ARGUMENT
#endif
