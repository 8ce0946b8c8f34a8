// moe info: a checkpoint's config, step, per-expert parameter norms, and whether every
// checksum verifies (exit status 3 when one does not).
#include <cstdio>
#include <filesystem>

#include "launch/command.hpp"
#include "moe/checkpoint.hpp"

namespace moe::cli {
namespace {

const char* status_text(TensorChecksum c) {
  return c == TensorChecksum::Verified ? "verified" : c == TensorChecksum::NotPresent ? "none (no Fletcher32 filter)" : "FAILED";
}

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
    for (const ConfigField& field : config_fields())
      std::printf("  %-22s %s\n", field.name, field_text(field, s.config).c_str());
    std::printf("step        %lld\n", static_cast<long long>(s.step));
    std::printf("optimizer   %s\n", s.has_optimizer_state ? "state present" : "none");
    std::printf("%6s", "expert");
    for (const std::string& name : s.expert_tensors) std::printf(" %12s", ("|" + name + "|").c_str());
    std::printf("  checksum\n");
    int failed = 0, unchecked = 0;
    for (std::size_t e = 0; e < s.experts.size(); ++e) {
      const ExpertSummary& x = s.experts[e];
      failed += x.checksum == TensorChecksum::Failed;
      unchecked += x.checksum == TensorChecksum::NotPresent;
      std::printf("%6zu", e);
      for (std::size_t i = 0; i < s.expert_tensors.size(); ++i)
        if (i < x.norms.size()) std::printf(" %12.5g", x.norms[i]);
        else std::printf(" %12s", "-");  // unreadable: no numbers
      std::printf("  %s\n", status_text(x.checksum));
      if (!x.error.empty()) std::printf("         %s\n", x.error.c_str());
    }
    int tensors_failed = 0;
    for (const TensorSummary& t : s.tensors) {
      tensors_failed += t.checksum == TensorChecksum::Failed;
      unchecked += t.checksum == TensorChecksum::NotPresent;
      if (t.checksum == TensorChecksum::Failed)
        std::printf("%-22s %12s  %s\n         %s\n", t.name.c_str(), "-", status_text(t.checksum), t.error.c_str());
      else
        std::printf("%-22s %12.5g  %s\n", t.name.c_str(), t.norm, status_text(t.checksum));
    }
    if (failed || tensors_failed)
      std::printf("checksums   %d of %zu experts and %d of %zu other tensors FAILED: the file is corrupt\n", failed,
                  s.experts.size(), tensors_failed, s.tensors.size());
    else if (unchecked)
      std::printf("checksums   none stored for %d of the tensors (written without the Fletcher32 filter); every "
                  "tensor read\n", unchecked);
    else
      std::printf("checksums   all %zu experts verified, and %zu other tensors\n", s.experts.size(), s.tensors.size());
    return failed || tensors_failed ? 3 : 0;
  }

 private:
  std::string path_;
};

}  // namespace

std::unique_ptr<Command> make_info_command() { return std::make_unique<InfoCommand>(); }

}  // namespace moe::cli
