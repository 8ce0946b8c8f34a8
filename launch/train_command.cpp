// moe train: a seeded synthetic task — a fixed random teacher MoE maps random tokens
// to targets and the student layer learns them with mean-squared error — across the
// ranks of the job, with progress on rank 0, periodic checkpoints (parameters,
// optimizer state, step and the data stream's position) and exact resume.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <future>
#include <optional>

#include "buffer.hpp"
#include "collective_check.hpp"
#include "kernels/environment_switch.hpp"
#include "kernels/ops.hpp"
#include "launch/command.hpp"
#include "launch/training_metrics.hpp"
#include "moe/checkpoint.hpp"
#include "moe/optimizer.hpp"

namespace moe::cli {
namespace {

// The data stream is counter-based: the tokens of (seed, rank, step) are the same
// whenever they are drawn, so its whole state is (seed, position).
std::uint64_t token_stream(int rank, std::int64_t step) {
  return (static_cast<std::uint64_t>(rank) << 40) ^ static_cast<std::uint64_t>(step);
}

// MOE_STUDENT_HIGH_PRIORITY=1, a trial (off until a GPU check times it): the student's
// streams, and those of the step's data and loss, take the GPU's greatest priority
// (LayerOptions::high_priority). Labelling ahead, the teacher's forward then runs in the
// time the student's step leaves the GPU idle (its waits for the host) instead of in
// its way: in the seventh check the student's forward took 2.17 ms beside the teacher
// against 1.32 in a dataset job, and labelling ahead gained 0.07 ms a step in all.
// Elsewhere nothing shares the GPU with the student, and the priority changes nothing.
// 0 or unset: the default priority; anything else is an error naming the variable.
bool student_high_priority_from_environment() {
  return kernels::switch_from_environment("MOE_STUDENT_HIGH_PRIORITY", false, "train",
                                          "the student's GPU streams at the greatest priority");
}

// The host's clock for consecutive parts of a step: lap(part) adds the time since the
// last lap (or the construction) to `part`, in seconds.
class Laps {
 public:
  void lap(double& part) {
    const auto now = std::chrono::steady_clock::now();
    part += std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

// One step's data where the layer computes (device memory for --device cuda, host
// memory for the CPU): the token rows, the teacher's targets, the student's output and
// ∂L/∂output. The rows are made there (Ops::fill_normal of the stream (data seed,
// token_stream(rank, step)): the host's values, up to the GPU's last bit), and the loss is reduced
// there, so a GPU step moves nothing but scalars across to the host.
//
// Two kinds of data:
// - a stream (dataset_batches = 0): every step draws new rows and runs the teacher on them;
// - a dataset (dataset_batches = N): the teacher labels the stream's first N batches once,
//   and step s trains on batch s mod N, epoch after epoch, as a job over a fixed dataset
//   does. Batch i is the stream's batch i, bit for bit, so the first N steps are the
//   stream's. The teacher's forward then leaves the step, whose time is the student's.
//
// A stream may be labelled ahead (--label-ahead): a thread of its own draws step s + 1's
// batch and the teacher labels it while the student trains on step s, as a data loader
// prefetches (docs/design.md §4b). The thread draws with Ops of its own (on a GPU, its own
// stream), so the student's thread waits for nothing but the finished targets. The stream
// keeps two slots, s's and s + 1's, and the rows and targets are the same bits either
// way: neither the draw nor the teacher's forward depends on when or where it runs.
class StepData {
 public:
  StepData(const LayerOptions& options, const Communicator& comm, std::int64_t tokens, std::int64_t hidden,
           std::int64_t dataset_batches, bool label_ahead)
      : ops_(make_data_ops(options, comm, options.high_priority)),
        tokens_(tokens),
        n_(tokens * hidden),
        dataset_(dataset_batches > 0),
        label_ahead_(label_ahead && !dataset_),
        slots_(dataset_ ? dataset_batches : (label_ahead_ ? 2 : 1)),
        x_(*ops_), target_(*ops_), output_(*ops_), grad_(*ops_), grad_input_(*ops_) {
    // The rows and targets of every batch: named by the flag when they cannot fit.
    const double bytes = 2.0 * sizeof(float) * double(n_) * double(slots_);
    const std::string what = dataset_ ? "the dataset (--dataset-batches " + std::to_string(slots_) + " of " +
                                            std::to_string(tokens) + " token rows and their targets)"
                                      : "a step's data (--tokens " + std::to_string(tokens) + ")";
    MOE_CHECK_ARG(bytes < 9.0e18, "train", what, " needs ", bytes, " bytes");
    if (options.device == Device::CPU) detail::check_fits_in_memory(static_cast<std::int64_t>(bytes), what);
    for (Buffer<float>* b : {&output_, &grad_, &grad_input_}) b->resize(static_cast<std::size_t>(n_));
    for (Buffer<float>* b : {&x_, &target_}) b->resize(static_cast<std::size_t>(n_ * slots_));
    if (label_ahead_) ahead_ops_ = make_data_ops(options, comm, false);  // the teacher's side
  }
  // With a dataset, labels its batches: the teacher's forward of each, once.
  void label_dataset(MoELayer& teacher, std::uint64_t seed, int rank) {
    if (!dataset_) return;
    for (std::int64_t i = 0; i < slots_; ++i) label(teacher, draw(*ops_, seed, rank, i, i), i);
  }
  // This rank's token rows of a step, with their targets ready. Labelling ahead, it also
  // sets the labelling thread to draw and label the next step's batch, unless `step` is
  // the last. The host's time in drawing and in labelling goes into wall.draw and
  // wall.label; labelled ahead, the wait for the thread's draw and forward is wall.label.
  const float* tokens(std::uint64_t seed, int rank, std::int64_t step, std::int64_t last_step, MoELayer& teacher,
                      StepWall& wall) {
    slot_ = step % slots_;
    if (dataset_) return x_.data() + n_ * slot_;
    Laps laps;
    if (labelled_ahead_ == step) {
      labelling_.get();  // rethrows the teacher's error, if it had one
      laps.lap(wall.label);
    } else {
      const float* x = draw(*ops_, seed, rank, step, slot_);
      laps.lap(wall.draw);
      label(teacher, x, slot_);
      laps.lap(wall.label);
    }
    if (label_ahead_ && step < last_step) {
      const std::int64_t next = (step + 1) % slots_;
      labelling_ = std::async(std::launch::async, [this, &teacher, seed, rank, step, next] {
        label(teacher, draw(*ahead_ops_, seed, rank, step + 1, next), next);
      });
      labelled_ahead_ = step + 1;
    }
    return x_.data() + n_ * slot_;
  }
  float* output() { return output_.data(); }
  float* grad_input() { return grad_input_.data(); }
  // Σ (output − target)² over this rank's values, leaving ∂L/∂output = scale · (output −
  // target) in grad(); the target is left as it was (a dataset's is read again next epoch).
  // Ops::sum_squares sums in a fixed order: the same bits every run.
  double squared_error(double scale) {
    float* g = grad_.data();
    ops_->copy(g, target_.data() + n_ * slot_, sizeof(float) * static_cast<std::size_t>(n_));
    ops_->scale(g, n_, -1.0f);
    ops_->add(g, output_.data(), n_);
    const double sum = ops_->sum_squares(g, n_);
    ops_->scale(g, n_, static_cast<float>(scale));
    ops_->synchronize();
    return sum;
  }
  const float* grad() const { return grad_.data(); }

 private:
  static std::unique_ptr<kernels::Ops> make_data_ops(const LayerOptions& options, const Communicator& comm,
                                                     bool high_priority) {
    if (options.device == Device::CPU) return kernels::make_cpu_ops();
    return kernels::make_cuda_ops(comm.local_rank() % std::max(1, kernels::cuda_device_count()),
                                  kernels::GemmPrecision::FP32, high_priority);
  }
  // The stream's batch `step`, into a slot, made by `ops`: ops_ on the student's thread,
  // ahead_ops_ on the labelling thread.
  const float* draw(kernels::Ops& ops, std::uint64_t seed, int rank, std::int64_t step, std::int64_t slot) {
    float* x = x_.data() + n_ * slot;
    ops.fill_normal(x, n_, seed, token_stream(rank, step));
    ops.synchronize();  // the layers read them on streams of their own
    return x;
  }
  // The teacher's forward of a slot's rows into its targets; touches nothing of this
  // object's but the slot's rows and targets, so that it may run on the labelling thread.
  void label(MoELayer& teacher, const float* x, std::int64_t slot) {
    teacher.forward(x, tokens_, target_.data() + n_ * slot);
  }

  std::unique_ptr<kernels::Ops> ops_;
  std::unique_ptr<kernels::Ops> ahead_ops_;  // the labelling thread's, labelling ahead
  std::int64_t tokens_, n_;
  bool dataset_, label_ahead_;
  std::int64_t slots_;     // a dataset's batches, or the stream's one slot (two labelling ahead)
  std::int64_t slot_ = 0;  // the current step's
  Buffer<float> x_, target_, output_, grad_, grad_input_;
  // Labelling ahead: the step whose batch the teacher is labelling, and its thread. Last
  // member, so that the thread is joined before the buffers it writes go.
  std::int64_t labelled_ahead_ = -1;
  std::future<void> labelling_;
};

class TrainCommand final : public Command {
 public:
  TrainCommand() : config_options_(MOEConfig(8, 2, 256, 1024, 1.25f)) { options_.z_loss_coef = 1e-3f; }

  CLI::App* add_to(CLI::App& app) override {
    CLI::App* cmd = app.add_subcommand("train", "train a layer on a synthetic teacher task (MSE), across ranks");
    config_options_.add_to(cmd);
    cmd->add_option("--steps", steps_, "train until this step")->capture_default_str()->check(non_negative());
    tokens_option_ =
        cmd->add_option("--tokens", tokens_, "tokens per rank per step")->capture_default_str()->check(positive());
    dataset_option_ = cmd->add_option("--dataset-batches", dataset_batches_,
                                      "label this many batches per rank once and cycle through them, epoch after "
                                      "epoch (0: a fresh batch, labelled by the teacher, every step)")
                          ->capture_default_str()
                          ->check(non_negative());
    cmd->add_option("--label-ahead", label_ahead_,
                    "stream only: the teacher labels the next step's batch while the student trains on this one "
                    "(one rank; auto: on a GPU). The same results either way")
        ->capture_default_str()
        ->check(CLI::IsMember({"auto", "on", "off"}));
    groups_.add_to(cmd);
    cmd->add_option("--optimizer", optimizer_, "adamw or sgd")->capture_default_str()->check(CLI::IsMember({"adamw", "sgd"}));
    cmd->add_option("--lr", lr_, "learning rate")->capture_default_str();
    cmd->add_option("--momentum", momentum_, "SGD momentum")->capture_default_str();
    cmd->add_option("--weight-decay", weight_decay_, "decoupled weight decay")->capture_default_str();
    cmd->add_option("--decay-steps", decay_steps_,
                    "cosine decay of the learning rate to a tenth over this many steps (0: constant)")
        ->capture_default_str()
        ->check(non_negative());
    cmd->add_option("--clip", clip_, "clip gradients to this global norm (0: no clipping)")
        ->capture_default_str()
        ->check(non_negative());  // a NaN or negative norm would turn clipping off unsaid
    cmd->add_option("--aux-coef", options_.aux_loss_coef, "load-balancing loss coefficient")->capture_default_str();
    z_coef_option_ = cmd->add_option("--z-coef", options_.z_loss_coef,
                                     "router z-loss coefficient (softmax router; 0 for sigmoid unless given)")
                         ->capture_default_str();
    // Seeds are unsigned: without the check, CLI11 would wrap -1 to 2^64 - 1.
    cmd->add_option("--seed", seed_, "student initialisation seed")->capture_default_str()->check(non_negative());
    cmd->add_option("--teacher-seed", teacher_seed_, "teacher seed")->capture_default_str()->check(non_negative());
    cmd->add_option("--data-seed", data_seed_, "token stream seed")->capture_default_str()->check(non_negative());
    cmd->add_option("--log-every", log_every_, "progress line (and phase times) every N steps")
        ->capture_default_str()
        ->check(positive());
    cmd->add_option("--metrics", metrics_,
                    "append one JSON object per logged window to this file (JSON Lines; rank 0 writes it; "
                    "scripts/plot-training.py draws it)");
    cmd->add_option("--ckpt", checkpoint_, "checkpoint to write (periodically and at the end)");
    cmd->add_option("--save-every", save_every_, "checkpoint every N steps (0: only at the end)")
        ->capture_default_str()
        ->check(non_negative());
    cmd->add_option("--resume", resume_, "continue from this checkpoint (its config, state and data position)");
    add_device_options(cmd, device_);
    return cmd;
  }
  bool collective() const override { return true; }

  int run(Communicator& comm) override {
    const bool root = comm.rank() == 0;
    std::int64_t step = 0;
    if (!resume_.empty()) {
      collective_check(comm, [&] {
        config_ = read_checkpoint_config(resume_);
        // A config flag given with --resume must agree with the checkpoint.
        const MOEConfig asked = config_options_.config();
        for (const ConfigField& field : config_fields())
          MOE_CHECK_ARG(!config_options_.given(field.name) || field_code(field, asked) == field_code(field, config_),
                        "train", field.flag, " ", field_text(field, asked), " contradicts '", resume_,
                        "', which holds ", field.name, " = ", field_text(field, config_),
                        "; a resumed run keeps the checkpoint's config (drop the flag)");
      });
    } else {
      config_ = config_options_.config();
    }
    if (config_.router == RouterKind::Sigmoid && z_coef_option_->count() == 0) options_.z_loss_coef = 0.0f;

    apply_device_options(device_, options_);
    collective_check(comm, [&] { options_.high_priority = student_high_priority_from_environment(); });
    // Expert groups with replicas (docs/design.md §2): the student's and the teacher's
    // experts are sharded over the group; the tokens, the loss and the checkpoint are
    // the whole job's as before.
    groups_.split(comm);
    MoELayer student = groups_.make_layer(config_, comm, seed_, options_);
    Optimizer optimizer = optimizer_ == "adamw"
                              ? Optimizer::adamw(student, {lr_, 0.9f, 0.999f, 1e-8f, weight_decay_})
                              : Optimizer::sgd(student, {lr_, momentum_, weight_decay_});
    if (!resume_.empty()) {
      TrainingAttributes training;
      step = load_checkpoint(resume_, student, &optimizer, &training);
      auto restore = [&](const char* name, auto& value) {
        const auto it = training.find(name);
        if (it != training.end()) value = static_cast<std::remove_reference_t<decltype(value)>>(it->second);
      };
      restore("data_seed", data_seed_);
      restore("teacher_seed", teacher_seed_);
      // The data's shape is the checkpoint's; a flag given with --resume must agree.
      // `absent` is what a checkpoint without the attribute held.
      auto keep = [&](const char* name, const CLI::Option* flag, std::int64_t& value, std::int64_t absent) {
        const std::int64_t asked = value;
        value = absent;
        restore(name, value);
        MOE_CHECK_ARG(flag->count() == 0 || asked == value, "train", flag->get_name(), " ", asked,
                      " contradicts '", resume_, "', which holds ", name, " = ", value,
                      "; a resumed run keeps the checkpoint's data (drop the flag)");
      };
      keep("tokens_per_rank", tokens_option_, tokens_, tokens_);
      keep("dataset_batches", dataset_option_, dataset_batches_, 0);
      std::int64_t position = step;
      restore("data_position", position);
      MOE_CHECK_ARG(position == step, "train", "'", resume_, "': data_position = ", position,
                    " differs from step = ", step);
      MOE_CHECK_ARG(steps_ > step, "train", "--steps ", steps_, " is at or below the step of '", resume_, "' (",
                    step, "): nothing to train; --steps is the step to train until, not a count");
    }
    // The teacher routes without capacity, so that every target is a full MoE output.
    MOEConfig teacher_config = config_;
    teacher_config.drop_tokens = false;
    LayerOptions teacher_options;
    teacher_options.device = options_.device;
    teacher_options.precision = options_.precision;  // the job's arithmetic throughout
    // Labelling ahead runs the teacher beside the student, so it needs one rank, whose
    // teacher exchanges with nobody: a communicator of its own keeps the two threads off
    // each other's collectives (MPI at one rank included). Its targets are the same bits
    // over either communicator.
    collective_check(comm, [&] {
      MOE_CHECK_ARG(label_ahead_ != "on" || comm.size() == 1, "train", "--label-ahead on with ", comm.size(),
                    " ranks; expected one rank (the teacher's forward exchanges tokens with the other ranks)");
      MOE_CHECK_ARG(label_ahead_ != "on" || dataset_batches_ == 0, "train", "--label-ahead on with --dataset-batches ",
                    dataset_batches_, "; expected a stream (a dataset is labelled once, before the first step)");
    });
    const bool label_ahead = dataset_batches_ == 0 && comm.size() == 1 &&
                             (label_ahead_ == "on" || (label_ahead_ == "auto" && options_.device == Device::CUDA));
    const std::unique_ptr<Communicator> teacher_comm = label_ahead ? make_communicator(CommBackend::Local) : nullptr;
    MoELayer teacher(teacher_config, label_ahead ? *teacher_comm : groups_.experts(comm), teacher_seed_,
                     teacher_options);
    std::unique_ptr<MetricsFile> metrics;  // rank 0's, with --metrics
    std::optional<StepData> data;
    collective_check(comm, [&] {
      MOE_CHECK_ARG(metrics_.empty() || (metrics_ != checkpoint_ && metrics_ != resume_), "train", "--metrics '",
                    metrics_, "' is also the checkpoint; expected a file of its own");
      if (root && !metrics_.empty()) metrics = std::make_unique<MetricsFile>(metrics_, !resume_.empty());
      // A dataset too large for the memory fails here, on every rank, naming its size.
      data.emplace(options_, comm, tokens_, config_.hidden_dim, dataset_batches_, label_ahead);
    });

    if (root) {
      const std::string source =
          dataset_batches_ > 0 ? ", a dataset of " + std::to_string(dataset_batches_) + " batches per rank"
                               : (label_ahead ? ", the stream labelled a step ahead" : "");
      std::printf("moe train: %s on %d rank(s)%s (%s, %s), %lld tokens per rank per step%s, %s lr %g%s\n",
                  config_.to_string().c_str(), comm.size(), groups_.describe().c_str(), device_.device.c_str(),
                  comm_backend_name(comm.backend()),
                  static_cast<long long>(tokens_), source.c_str(), optimizer_.c_str(),
                  double(optimizer.learning_rate()), resume_.empty() ? "" : (", resumed at step " + std::to_string(step)).c_str());
      // Top-1 renormalised is s/s: a constant weight, so the task loss has no gradient into the
      // router, and only the aux and z losses move it. Valid (it is what the config says), but
      // rarely meant: Switch Transformer's top-1 weights each token by its score.
      if (config_.top_k == 1 && config_.normalize_top_k)
        std::fprintf(stderr,
                     "moe train: note: with --top-k 1 and renormalised weights every kept token's weight is "
                     "%g (s/s times --routed-scaling), so the task loss gives the router no gradient and only "
                     "the aux and z losses train it; --raw-weights weights each token by its router score "
                     "(Switch Transformer)\n",
                     double(config_.routed_scaling_factor));
      std::printf("%8s %12s %9s %9s %11s %8s %9s\n", "step", "loss", "aux", "z", "tokens/s", "dropped", "load max");
    }
    const double total_tokens = double(comm.size()) * double(tokens_);
    auto window_start = std::chrono::steady_clock::now();
    TrainingWindow window;
    data->label_dataset(teacher, data_seed_, comm.rank());
    for (; step < steps_; ++step) {
      StepWall wall;  // where the step's time goes, on the host's clock
      const float* x = data->tokens(data_seed_, comm.rank(), step, steps_ - 1, teacher, wall);
      Laps laps;
      const ForwardResult out = student.forward(x, tokens_, data->output(), Pass::Training);
      laps.lap(wall.forward);

      // Loss: mean squared error over every rank's tokens; its gradient on this rank.
      double sums[4] = {data->squared_error(2.0 / (total_tokens * double(config_.hidden_dim))), out.aux_loss,
                        out.z_loss, double(out.stats.dropped)};
      comm.all_reduce(sums, 4, DataType::Float64, ReduceOp::Sum);
      // The same sums on every rank, so every rank stops here alike, before a step or a
      // save could write non-finite weights; the last checkpoint stays as it was.
      collective_check(comm, [&] {
        MOE_CHECK_ARG(std::isfinite(sums[0]), "train", "the loss is ", sums[0], " at step ", step + 1,
                      "; training stopped without updating the weights",
                      checkpoint_.empty() ? "" : " (the last checkpoint written is kept)");
      });
      laps.lap(wall.loss);
      student.zero_grad();
      student.backward(data->grad(), data->grad_input());
      laps.lap(wall.backward);
      if (clip_ > 0) clip_grad_norm(student, clip_);
      // A function of the step alone (not of --steps), so a resumed run follows the
      // same schedule as one that never stopped.
      if (decay_steps_ > 0) {
        const double progress = std::min(1.0, double(step) / double(decay_steps_));
        optimizer.set_learning_rate(static_cast<float>(lr_ * (0.1 + 0.45 * (1.0 + std::cos(3.141592653589793 * progress)))));
      }
      optimizer.step();
      laps.lap(wall.optimizer);

      // The routing's balance (load max) is over every rank's top-k choices per expert,
      // before capacity: what the sigmoid router's bias update balances. A layer's counts
      // are its expert group's; the replicas add the other groups'.
      ForwardStats stats = out.stats;
      if (groups_.grouped()) {
        for (std::vector<std::int64_t>* counts : {&stats.chosen_per_expert, &stats.tokens_per_expert})
          groups_.replicas().all_reduce(counts->data(), static_cast<std::int64_t>(counts->size()), DataType::Int64,
                                       ReduceOp::Sum);
      }
      window.add_step(sums[0] / (total_tokens * double(config_.hidden_dim)), sums[1] / comm.size(),
                      sums[2] / comm.size(), sums[3] / (total_tokens * double(config_.top_k)), stats,
                      student.backward_times(), wall);

      const bool last = step + 1 == steps_;
      if ((step + 1) % log_every_ == 0 || last) {
        const double seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
        const double n = double(window.steps), tokens_per_s = total_tokens * n / seconds;
        if (root) {
          std::printf("%8lld %12.6f %9.4f %9.3f %11.0f %7.2f%% %9.2f\n", static_cast<long long>(step + 1),
                      window.loss / n, window.aux / n, window.z / n, tokens_per_s, 100.0 * window.dropped_share / n,
                      window.load_max_over_mean / n);
          std::printf("%s\n", phase_line(window).c_str());
        }
        std::fflush(stdout);
        // A failed write (a full disk) ends every rank, not rank 0 alone.
        collective_check(comm, [&] {
          if (!metrics) return;
          const Tensor<FLOAT_TYPE> bias = student.expert_bias();
          metrics->write(step + 1, window, tokens_per_s, optimizer.learning_rate(),
                         std::vector<float>(bias.begin(), bias.end()));
        });
        window_start = std::chrono::steady_clock::now();
        window = TrainingWindow{};
      }
      if (!checkpoint_.empty() && (last || (save_every_ > 0 && (step + 1) % save_every_ == 0))) {
        save_checkpoint(checkpoint_, student, step + 1, &optimizer,
                        {{"data_seed", static_cast<std::int64_t>(data_seed_)},
                         {"data_position", step + 1},
                         {"teacher_seed", static_cast<std::int64_t>(teacher_seed_)},
                         {"tokens_per_rank", tokens_},
                         {"dataset_batches", dataset_batches_}});
        if (root) std::printf("%8lld saved %s\n", static_cast<long long>(step + 1), checkpoint_.c_str());
      }
    }
    return 0;
  }

 private:
  ConfigOptions config_options_;
  MOEConfig config_;
  CLI::Option *z_coef_option_ = nullptr, *tokens_option_ = nullptr, *dataset_option_ = nullptr;
  std::string optimizer_ = "adamw", checkpoint_, resume_, metrics_, label_ahead_ = "auto";
  LayerOptions options_;
  DeviceOptions device_;
  ExpertGroupOption groups_;
  std::int64_t steps_ = 1000, tokens_ = 512, log_every_ = 100, save_every_ = 250, decay_steps_ = 1000,
               dataset_batches_ = 0;
  float lr_ = 2e-3f, momentum_ = 0.9f, weight_decay_ = 0.0f, clip_ = 1.0f;
  std::uint64_t seed_ = 1, teacher_seed_ = 1000, data_seed_ = 2000;
};

}  // namespace

std::unique_ptr<Command> make_train_command() { return std::make_unique<TrainCommand>(); }

}  // namespace moe::cli
