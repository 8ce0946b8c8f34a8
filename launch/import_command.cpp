// moe import: a checkpoint from one MoE layer of a model in safetensors files
// (Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V3), written by every rank (each its
// experts), so a layer too large for one process's memory imports across ranks.
#include <cstdio>
#include <filesystem>

#include "checkpoint/file_commit.hpp"
#include "collective_check.hpp"
#include "launch/command.hpp"
#include "moe/checkpoint.hpp"
#include "moe/import.hpp"

namespace moe::cli {
namespace {

class ImportCommand final : public Command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    CLI::App* cmd = app.add_subcommand("import", "build a checkpoint from one MoE layer of a safetensors model");
    cmd->add_option("--model", source_.model,
                    "a .safetensors file, a model.safetensors.index.json, or the directory holding them")
        ->required();
    cmd->add_option("--arch", source_.arch, "the model's architecture")
        ->required()
        ->check(CLI::IsMember(importable_architectures()));
    cmd->add_option("--layer", source_.layer, "the decoder layer whose MoE block to import")->required();
    cmd->add_option("--top-k", source_.top_k, "experts per token (default: config.json's num_experts_per_tok)");
    cmd->add_option("--out", out_, "checkpoint to write (HDF5)")->required();
    return cmd;
  }
  bool collective() const override { return true; }

  int run(Communicator& comm) override {
    MOEConfig config;
    collective_check(comm, [&] {
      checkpoint::check_not_an_input(out_, {{"--model", source_.model}});
      checkpoint::check_writable_destination(out_);
      config = imported_config(source_);
    });
    MoELayer layer(config, comm, 0);
    import_layer(source_, layer);
    save_checkpoint(out_, layer, 0);
    if (comm.rank() == 0)
      std::printf("wrote %s: layer %lld of %s (%s): %s, %.1f MB, by %d rank(s)\n", out_.c_str(),
                  static_cast<long long>(source_.layer), source_.model.c_str(), source_.arch.c_str(),
                  config.to_string().c_str(), double(std::filesystem::file_size(out_)) / 1e6, comm.size());
    return 0;
  }

 private:
  ImportSource source_;
  std::string out_;
};

}  // namespace

std::unique_ptr<Command> make_import_command() { return std::make_unique<ImportCommand>(); }

}  // namespace moe::cli
