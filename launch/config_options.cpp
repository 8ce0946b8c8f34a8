#include "launch/command.hpp"

#include <algorithm>
#include <cstdint>

namespace moe::cli {

namespace {

CLI::Validator bound(bool strict) {
  return CLI::Validator(
      [strict](std::string& text) -> std::string {
        double value = 0;
        try {
          std::size_t used = 0;
          value = std::stod(text, &used);
          if (used != text.size()) throw std::invalid_argument(text);
        } catch (const std::exception&) {
          return "expected a number (got '" + text + "')";
        }
        if (strict ? value > 0 : value >= 0) return {};
        return std::string("must be ") + (strict ? "> 0" : ">= 0") + " (got " + text + ")";
      },
      strict ? "> 0" : ">= 0");
}

}  // namespace

CLI::Validator positive() { return bound(true); }
CLI::Validator non_negative() { return bound(false); }

ConfigOptions::ConfigOptions(const MOEConfig& defaults) : defaults_(defaults) {}

void ConfigOptions::add_to(CLI::App* command) {
  slots_.clear();
  slots_.reserve(config_fields().size());  // the options keep pointers into the slots
  for (const ConfigField& field : config_fields()) {
    slots_.push_back(Slot{&field});
    Slot& slot = slots_.back();
    const FieldValue value = field.get(defaults_);
    switch (field.type) {
      case FieldType::Int:
        slot.integer = std::get<std::int64_t>(value);
        slot.option = command->add_option(field.flag, slot.integer, field.help)->capture_default_str();
        break;
      case FieldType::Float:
        slot.number = std::get<double>(value);
        slot.option = command->add_option(field.flag, slot.number, field.help)->capture_default_str();
        break;
      case FieldType::Choice:
        slot.text = std::get<std::string>(value);
        slot.option = command->add_option(field.flag, slot.text, field.help)->check(CLI::IsMember(field.choices));
        break;
      case FieldType::Bool: slot.option = command->add_flag(field.flag, field.help); break;
    }
  }
}

bool ConfigOptions::given(const std::string& name) const {
  for (const Slot& slot : slots_)
    if (name == slot.field->name) return slot.option && slot.option->count() > 0;
  return false;
}

std::vector<std::string> ConfigOptions::given_flags() const {
  std::vector<std::string> flags;
  for (const Slot& slot : slots_)
    if (slot.option && slot.option->count() > 0) flags.push_back(slot.field->flag);
  return flags;
}

MOEConfig ConfigOptions::config() const {
  MOEConfig c = defaults_;
  for (const Slot& slot : slots_) {
    if (!slot.option || slot.option->count() == 0) continue;
    switch (slot.field->type) {
      case FieldType::Int: slot.field->set(c, slot.integer); break;
      case FieldType::Float: slot.field->set(c, slot.number); break;
      case FieldType::Choice: slot.field->set(c, slot.text); break;
      case FieldType::Bool: slot.field->set(c, std::int64_t{slot.field->flag_sets}); break;
    }
  }
  if (!given("activation")) c.activation = default_activation(c.expert_kind);
  return c;
}

void add_device_options(CLI::App* command, DeviceOptions& options) {
  command->add_option("--device", options.device, "where the layer computes: cpu, or cuda (the GPU of the local rank)")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  command->add_option("--precision", options.precision, "GPU expert GEMMs: fp32, tf32 or bf16")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp32", "tf32", "bf16"}));
}

CLI::Option* ExpertGroupOption::add_to(CLI::App* command) {
  return command
      ->add_option("--expert-parallel", size_,
                   "shard the experts over groups of this many consecutive ranks, each group a data-parallel "
                   "replica of the others (0: one group of every rank); a divisor of the ranks")
      ->capture_default_str()
      ->check(non_negative());
}

void ExpertGroupOption::split(Communicator& job) {
  if (size_ == 0 || size_ == job.size()) return;
  groups_ = split_expert_parallel(job, static_cast<int>(std::min<std::int64_t>(size_, INT32_MAX)));
}

MoELayer ExpertGroupOption::make_layer(const MOEConfig& config, Communicator& job, std::uint64_t seed,
                                       const LayerOptions& options) const {
  if (!grouped()) return MoELayer(config, job, seed, options);
  return MoELayer(config, *groups_.experts, *groups_.replicas, seed, options);
}

std::string ExpertGroupOption::describe() const {
  if (!grouped()) return "";
  return " in expert groups of " + std::to_string(groups_.experts->size()) + " (" +
         std::to_string(groups_.replicas->size()) + " replicas)";
}

void apply_device_options(const DeviceOptions& options, LayerOptions& layer) {
  layer.device = options.device == "cuda" ? Device::CUDA : Device::CPU;
  layer.precision = options.precision == "tf32"   ? Precision::TF32
                    : options.precision == "bf16" ? Precision::BF16
                                                  : Precision::FP32;
}

}  // namespace moe::cli
