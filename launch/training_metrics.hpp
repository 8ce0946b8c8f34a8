// What `moe train` reports for each logged window of steps: the progress line on rank
// 0's terminal, the phase line under it, and one JSON object per window in the
// --metrics file (JSON Lines; scripts/plot-training.py draws it).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "moe/layer.hpp"

namespace moe::cli {

// Where a step's time goes on the host's clock (steady_clock around each part of the
// loop), summed over a window. Each part ends where the host last waited, so a part
// also holds the device's queued work it waited for: on a GPU the optimizer's kernels
// are queued without a wait, and finish inside the next step's data or forward.
// - draw: the stream's token rows made (and waited for);
// - label: the teacher's forward of the step's rows, or the wait for the thread that
//   labelled them ahead (0 for a dataset);
// - forward, loss (the squared error, its all-reduce and the finiteness check),
//   backward (zero_grad and backward), optimizer (clipping and the step).
struct StepWall {
  double draw = 0, label = 0, forward = 0, loss = 0, backward = 0, optimizer = 0;
  struct Field {
    const char* name;
    double StepWall::*seconds;
  };
  static constexpr Field fields[] = {{"draw", &StepWall::draw},         {"label", &StepWall::label},
                                     {"forward", &StepWall::forward},   {"loss", &StepWall::loss},
                                     {"backward", &StepWall::backward}, {"optimizer", &StepWall::optimizer}};
  StepWall& operator+=(const StepWall& other) {
    for (const Field& f : fields) this->*f.seconds += other.*f.seconds;
    return *this;
  }
};

// Sums over the steps of one window, turned into means when it is reported.
struct TrainingWindow {
  std::int64_t steps = 0;
  double loss = 0, aux = 0, z = 0, dropped_share = 0, load_max_over_mean = 0;
  std::vector<std::int64_t> chosen_per_expert, kept_per_expert;  // global counts, summed
  PhaseTimes forward, backward;                                 // this rank's, summed
  StepWall wall;                                                // this rank's, summed
  double seconds = 0;

  void add_step(double step_loss, double step_aux, double step_z, double step_dropped_share,
                const ForwardStats& stats, const PhaseTimes& backward_times, const StepWall& step_wall);
};

// The --metrics file: rank 0 appends one line per window. Opened for appending on
// --resume (the series continues), truncated otherwise.
class MetricsFile {
 public:
  MetricsFile() = default;
  MetricsFile(const std::string& path, bool append);  // throws moe::Error naming the path
  ~MetricsFile();
  MetricsFile(const MetricsFile&) = delete;
  MetricsFile& operator=(const MetricsFile&) = delete;

  bool is_open() const { return file_ != nullptr; }
  // One JSON object: step, loss, aux_loss, z_loss, tokens_per_s, dropped_share,
  // load_max_over_mean, lr, chosen_per_expert, kept_per_expert, expert_bias (sigmoid
  // router; else omitted), forward_ms and backward_ms per phase and wall_ms per part of
  // the step (StepWall; means per step).
  void write(std::int64_t step, const TrainingWindow& window, double tokens_per_s, double lr,
             const std::vector<float>& expert_bias);

 private:
  std::FILE* file_ = nullptr;
  std::string path_;
};

// "ms/step fwd: route 0.12 plan 0.01 … | bwd: … | wall: draw 0.05 label 0.70 …" — the
// window's mean phase times and step parts per step.
std::string phase_line(const TrainingWindow& window);

}  // namespace moe::cli
