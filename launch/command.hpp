// A subcommand of the `moe` program: it declares its options on a CLI11 subcommand
// and runs with the job's communicator once the command line has been parsed.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "moe/communicator.hpp"
#include "moe/config.hpp"
#include "moe/config_fields.hpp"
#include "moe/layer.hpp"

namespace moe::cli {

class Command {
 public:
  virtual ~Command() = default;
  // Registers the subcommand and its options on `app`; returns the subcommand.
  virtual CLI::App* add_to(CLI::App& app) = 0;
  // True if the command works across ranks (init, infer, train); false if it is a
  // one-process tool (info, make-tokens) that rank 0 alone runs under mpirun.
  virtual bool collective() const = 0;
  // Returns the process exit status.
  virtual int run(Communicator& comm) = 0;
};

// Range checks whose messages say what was expected and what was given, e.g.
// "--tokens: must be > 0 (got 0)" (CLI11's own print the limits of a double).
CLI::Validator positive();
CLI::Validator non_negative();

// Collective: throws the same error on every rank unless every rank was given the same
// subcommand and the same value for every option, naming the option and the ranks.
void check_same_command_line(Communicator& comm, const CLI::App& app, const CLI::App& command);

std::unique_ptr<Command> make_init_command();
std::unique_ptr<Command> make_info_command();
std::unique_ptr<Command> make_infer_command();
std::unique_ptr<Command> make_make_tokens_command();
std::unique_ptr<Command> make_train_command();
std::unique_ptr<Command> make_import_command();
std::unique_ptr<Command> make_bench_command();

// The MOEConfig options shared by the commands that build a layer from scratch: one
// per field of moe/config_fields.hpp. A field whose flag is not given keeps the
// defaults' value, except the activation, which then follows the expert kind (relu
// for ffn, silu for glu).
class ConfigOptions {
 public:
  explicit ConfigOptions(const MOEConfig& defaults = MOEConfig());
  void add_to(CLI::App* command);
  MOEConfig config() const;  // after parsing
  bool given(const std::string& field_name) const;
  std::vector<std::string> given_flags() const;

 private:
  struct Slot {
    const ConfigField* field;
    std::int64_t integer = 0;
    double number = 0;
    std::string text;
    CLI::Option* option = nullptr;
  };
  MOEConfig defaults_;
  std::vector<Slot> slots_;
};

// --device cpu|cuda and --precision fp32|tf32|bf16, applied by apply_device_options.
struct DeviceOptions {
  std::string device = "cpu", precision = "fp32";
};
void add_device_options(CLI::App* command, DeviceOptions& options);
void apply_device_options(const DeviceOptions& options, LayerOptions& layer);

// --expert-parallel G: the layer's experts sharded over groups of G consecutive ranks,
// each group a data-parallel replica of the others (docs/design.md §2); 0 (the
// default) or the job's size is one group of every rank.
class ExpertGroupOption {
 public:
  CLI::Option* add_to(CLI::App* command);
  // Collective: the groups asked for, split off `job` (none for one group).
  void split(Communicator& job);
  bool grouped() const { return groups_.experts != nullptr; }
  // What the layer shards its experts over: the group, or the job.
  Communicator& experts(Communicator& job) const { return grouped() ? *groups_.experts : job; }
  Communicator& replicas() const { return *groups_.replicas; }
  // A layer over the groups with replicas, or over the job.
  MoELayer make_layer(const MOEConfig& config, Communicator& job, std::uint64_t seed,
                      const LayerOptions& options) const;
  // ", in expert groups of G (R replicas)" for a job's first line; empty for one group.
  std::string describe() const;

 private:
  std::int64_t size_ = 0;
  ExpertParallelGroups groups_;
};

}  // namespace moe::cli
