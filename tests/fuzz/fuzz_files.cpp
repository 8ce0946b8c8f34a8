// libFuzzer target for every file moe reads: the bytes become a file, which is then
// read as a checkpoint (inspect_checkpoint, load_reference_model, read_checkpoint_config)
// and as a token file. Every failure must be a moe::Error with a message; a crash, a
// sanitizer report, a hang or any other exception (std::bad_alloc included) is a finding.
// scripts/fuzz.sh builds and runs it.
#include <pthread.h>
#include <sanitizer/common_interface_defs.h>
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "checkpoint/token_file.hpp"
#include "moe/checkpoint.hpp"
#include "moe/error.hpp"

namespace {

// moe reads each file's metadata in a forked child first (checkpoint/detail/
// hdf5_probe.hpp); a crash there is moe doing its job, and the parent must end with a
// moe::Error. The child is a copy of this process, with libFuzzer's handlers for deadly
// signals, sanitizer reports and huge mallocs, which would write its crash down as the
// fuzzer's finding: it gets the default signal actions and no death callback instead,
// and anything libFuzzer still writes goes into MOE_FUZZ_CHILD_DIR, not the findings.
void forget_the_fuzzer_in_children() {
  for (int signal_number : {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE}) ::signal(signal_number, SIG_DFL);
  __sanitizer_set_death_callback(nullptr);
  if (const char* dir = std::getenv("MOE_FUZZ_CHILD_DIR")) (void)::chdir(dir);
}
[[maybe_unused]] const int registered_at_fork = ::pthread_atfork(nullptr, nullptr, forget_the_fuzzer_in_children);

const std::string& scratch_path() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir ? dir : "/tmp") + "/moe-fuzz-" + std::to_string(::getpid()) + ".h5";
  }();
  return path;
}

template <class Read>
void expect_moe_error_or_success(Read read) {
  try {
    read();
  } catch (const moe::Error&) {
    // A clear error: what hostile input should get.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = scratch_path();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  expect_moe_error_or_success([&] { moe::inspect_checkpoint(path); });
  expect_moe_error_or_success([&] { moe::load_reference_model(path); });
  expect_moe_error_or_success([&] {
    auto comm = moe::make_communicator(moe::CommBackend::Local);
    moe::checkpoint::read_token_block(path, *comm, 8);
  });
  return 0;
}
