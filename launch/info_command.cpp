// moe info: a checkpoint's config, step, per-expert parameter norms, and whether every
// checksum verifies (exit status 3 when one does not).
#include <cstdio>
#include <filesystem>

#include "launch/command.hpp"
#include "moe/checkpoint.hpp"

namespace moe::cli {
namespace {

class InfoCommand final : public Command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    CLI::App* cmd = app.add_subcommand("info", "describe a checkpoint and verify its checksums");
    cmd->add_option("checkpoint", path_, "checkpoint file (HDF5)")->required();
    return cmd;
  }
  bool collective() const override { return false; }

  int run(Communicator&) override {
    const CheckpointSummary s = inspect_checkpoint(path_);
    std::printf("checkpoint  %s (%.1f MB)\n", path_.c_str(), double(std::filesystem::file_size(path_)) / 1e6);
    std::printf("config      %s\n", s.config.to_string().c_str());
    std::printf("step        %lld\n", static_cast<long long>(s.step));
    std::printf("optimizer   %s\n", s.has_optimizer_state ? "state present" : "none");
    std::printf("%6s %12s %12s %12s %12s  %s\n", "expert", "|W1|", "|W2|", "|b1|", "|b2|", "checksum");
    int failed = 0, unchecked = 0;
    for (std::size_t e = 0; e < s.experts.size(); ++e) {
      const ExpertSummary& x = s.experts[e];
      const char* status = x.checksum == ExpertSummary::Checksum::Verified     ? "verified"
                           : x.checksum == ExpertSummary::Checksum::NotPresent ? "none (no Fletcher32 filter)"
                                                                               : "FAILED";
      failed += x.checksum == ExpertSummary::Checksum::Failed;
      unchecked += x.checksum == ExpertSummary::Checksum::NotPresent;
      std::printf("%6zu %12.5g %12.5g %12.5g %12.5g  %s\n", e, x.norm_w1, x.norm_w2, x.norm_b1, x.norm_b2, status);
      if (!x.error.empty()) std::printf("         %s\n", x.error.c_str());
    }
    if (failed)
      std::printf("checksums   %d of %zu experts FAILED: the file is corrupt\n", failed, s.experts.size());
    else if (unchecked)
      std::printf("checksums   none stored (written without the Fletcher32 filter); every expert read\n");
    else
      std::printf("checksums   all %zu experts verified\n", s.experts.size());
    return failed ? 3 : 0;
  }

 private:
  std::string path_;
};

}  // namespace

std::unique_ptr<Command> make_info_command() { return std::make_unique<InfoCommand>(); }

}  // namespace moe::cli
