// moe init: a seeded random checkpoint for a given config, written by every rank.
#include <cstdio>
#include <filesystem>

#include "launch/command.hpp"
#include "moe/checkpoint.hpp"

namespace moe::cli {
namespace {

class InitCommand final : public Command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    CLI::App* cmd = app.add_subcommand("init", "write a seeded random checkpoint for a config");
    cmd->add_option("--out", out_, "checkpoint to write (HDF5)")->required();
    config_options_.add_to(cmd);
    cmd->add_option("--seed", seed_, "initialisation seed")->capture_default_str()->check(non_negative());
    return cmd;
  }
  bool collective() const override { return true; }

  int run(Communicator& comm) override {
    const MOEConfig config = config_options_.config();
    MoELayer layer(config, comm, seed_);
    save_checkpoint(out_, layer, 0);
    if (comm.rank() == 0)
      std::printf("wrote %s: %s, seed %llu, %.1f MB, by %d rank(s)\n", out_.c_str(), config.to_string().c_str(),
                  static_cast<unsigned long long>(seed_), double(std::filesystem::file_size(out_)) / 1e6, comm.size());
    return 0;
  }

 private:
  std::string out_;
  ConfigOptions config_options_;
  std::uint64_t seed_ = 1;
};

}  // namespace

std::unique_ptr<Command> make_init_command() { return std::make_unique<InitCommand>(); }

}  // namespace moe::cli
