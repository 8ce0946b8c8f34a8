// libFuzzer target for every file moe reads: the bytes become a file, which is then
// read as a checkpoint (inspect_checkpoint, load_reference_model, read_checkpoint_config)
// and as a token file. Every failure must be a moe::Error with a message; a crash, a
// sanitizer report, a hang or any other exception (std::bad_alloc included) is a finding.
// scripts/fuzz.sh builds and runs it.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "checkpoint/token_file.hpp"
#include "moe/checkpoint.hpp"
#include "moe/error.hpp"

namespace {

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
