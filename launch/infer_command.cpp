// moe infer: the layer over a token file (docs/design.md §6), one process or any P that
// divides num_experts (or whose expert groups do: --expert-parallel); rank r takes its
// block of rows.
#include <chrono>
#include <cstdio>

#include "checkpoint/token_file.hpp"
#include "checkpoint/file_commit.hpp"
#include "collective_check.hpp"
#include "launch/command.hpp"
#include "launch/progress_line.hpp"
#include "moe/checkpoint.hpp"

namespace moe::cli {
namespace {

class InferCommand final : public Command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    CLI::App* cmd = app.add_subcommand("infer", "run a checkpoint over a token file");
    cmd->add_option("--ckpt", checkpoint_, "checkpoint (HDF5)")->required();
    cmd->add_option("--input", input_, "token file: /tokens float32 [T, H] or [B, S, H]")->required();
    cmd->add_option("--output", output_, "output file to write")->required();
    cmd->add_option("--traffic", traffic_, "dedup or per-assignment")
        ->capture_default_str()
        ->check(CLI::IsMember({"dedup", "per-assignment"}));
    add_device_options(cmd, device_);
    groups_.add_to(cmd);
    return cmd;
  }
  bool collective() const override { return true; }

  int run(Communicator& comm) override {
    const auto start = std::chrono::steady_clock::now();
    ProgressLine progress("moe infer", comm.rank() == 0);
    progress.stage(1, 5, "reading the checkpoint's config");
    MOEConfig config;
    collective_check(comm, [&] {
      // Before any work: the output must not be one of the inputs, nor a device or FIFO.
      checkpoint::check_not_an_input(output_, {{"--ckpt", checkpoint_}, {"--input", input_}});
      checkpoint::check_writable_destination(output_);
      config = read_checkpoint_config(checkpoint_);
    });
    LayerOptions options;
    options.traffic = traffic_ == "dedup" ? TrafficMode::Deduplicated : TrafficMode::PerAssignment;
    apply_device_options(device_, options);
    groups_.split(comm);
    MoELayer layer = groups_.make_layer(config, comm, 0, options);
    progress.stage(2, 5, "loading " + checkpoint_);
    load_checkpoint(checkpoint_, layer);
    progress.stage(3, 5, "reading the tokens of " + input_);
    const checkpoint::TokenBlock block = checkpoint::read_token_block(input_, comm, config.hidden_dim);
    progress.stage(4, 5, "forward of " + std::to_string(block.total_rows) + " tokens on " +
                             std::to_string(comm.size()) + " rank(s)" + groups_.describe());
    const ForwardResult result = layer.forward(block.rows);
    progress.stage(5, 5, "writing " + output_);
    checkpoint::write_inference_output(output_, comm, block, result, config.top_k);
    progress.clear();

    std::int64_t dropped = result.stats.dropped;
    comm.all_reduce(&dropped, 1, DataType::Int64, ReduceOp::Sum);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (comm.rank() == 0)
      std::printf("wrote %s: %lld tokens %s through %s on %d rank(s), %lld of %lld assignments dropped, %.2f s\n",
                  output_.c_str(), static_cast<long long>(block.total_rows),
                  shape_to_string(block.file_shape).c_str(), config.to_string().c_str(), comm.size(),
                  static_cast<long long>(dropped), static_cast<long long>(block.total_rows * config.top_k), seconds);
    return 0;
  }

 private:
  std::string checkpoint_, input_, output_, traffic_ = "dedup";
  DeviceOptions device_;
  ExpertGroupOption groups_;
};

}  // namespace

std::unique_ptr<Command> make_infer_command() { return std::make_unique<InferCommand>(); }

}  // namespace moe::cli
