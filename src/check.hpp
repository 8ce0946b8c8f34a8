// MOE_CHECK: the one check for library return codes (MPI, HDF5, CUDA, cuBLAS, NCCL).
// Each library supplies a small traits struct next to the code that calls it:
//   struct Mpi { static constexpr const char* library = "MPI";
//                static bool ok(int rc); static std::string name(int rc); };
// and a failing call throws moe::Error with the library, the call as written, the
// error's name, file:line, rank and host (detail::fail_call).
#pragma once

#include "moe/error.hpp"

#define MOE_CHECK(Lib, call)                                                          \
  do {                                                                                \
    const auto moe_check_rc_ = (call);                                                \
    if (!Lib::ok(moe_check_rc_))                                                      \
      ::moe::detail::fail_call(Lib::library, #call, Lib::name(moe_check_rc_), __FILE__, \
                               __LINE__);                                             \
  } while (0)
