#include "launch/training_metrics.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "moe/error.hpp"

namespace moe::cli {
namespace {

// Each field of a window's sums (PhaseTimes or StepWall: both list their fields) as ms
// per step.
template <class Sums>
nlohmann::ordered_json ms_per_step(const Sums& sum, std::int64_t steps) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const typename Sums::Field& f : Sums::fields) out[f.name] = 1e3 * (sum.*f.seconds) / double(steps);
  return out;
}

nlohmann::ordered_json phases_ms(const PhaseTimes& sum, std::int64_t steps) {
  nlohmann::ordered_json out = ms_per_step(sum, steps);
  out["total"] = 1e3 * sum.total() / double(steps);
  return out;
}

// " name 0.12" for each field of a window's sums, in ms per step; zeros left out where
// asked (phases that do not run here: one rank, no shared expert).
template <class Sums>
std::string ms_text(const Sums& sum, std::int64_t steps, bool leave_out_zeros) {
  std::string s;
  char buffer[64];
  for (const typename Sums::Field& f : Sums::fields) {
    const double ms = 1e3 * (sum.*f.seconds) / double(steps);
    if (leave_out_zeros && ms == 0) continue;
    std::snprintf(buffer, sizeof buffer, " %s %.2f", f.name, ms);
    s += buffer;
  }
  return s;
}

// JSON has no NaN or infinity: such a value is written as null.
nlohmann::ordered_json number(double v) { return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json(nullptr); }

void add_counts(std::vector<std::int64_t>& sum, const std::vector<std::int64_t>& counts) {
  if (sum.size() < counts.size()) sum.resize(counts.size(), 0);
  for (std::size_t i = 0; i < counts.size(); ++i) sum[i] += counts[i];
}

}  // namespace

void TrainingWindow::add_step(double step_loss, double step_aux, double step_z, double step_dropped_share,
                              const ForwardStats& stats, const PhaseTimes& backward_times,
                              const StepWall& step_wall) {
  ++steps;
  loss += step_loss;
  aux += step_aux;
  z += step_z;
  dropped_share += step_dropped_share;
  double max_load = 0, mean_load = 0;
  for (std::int64_t n : stats.chosen_per_expert) max_load = std::max(max_load, double(n)), mean_load += double(n);
  mean_load /= double(std::max<std::size_t>(stats.chosen_per_expert.size(), 1));
  load_max_over_mean += mean_load > 0 ? max_load / mean_load : 0;
  add_counts(chosen_per_expert, stats.chosen_per_expert);
  add_counts(kept_per_expert, stats.tokens_per_expert);
  forward += stats.times;
  backward += backward_times;
  wall += step_wall;
}

MetricsFile::MetricsFile(const std::string& path, bool append) : path_(path) {
  file_ = std::fopen(path.c_str(), append ? "a" : "w");
  if (!file_)
    detail::fail("train", "--metrics '", path, "' cannot be opened for writing: ", std::strerror(errno));
}

MetricsFile::~MetricsFile() {
  if (file_) std::fclose(file_);
}

void MetricsFile::write(std::int64_t step, const TrainingWindow& w, double tokens_per_s, double lr,
                        const std::vector<float>& expert_bias) {
  const double n = double(w.steps);
  nlohmann::ordered_json line = {
      {"step", step},
      {"loss", number(w.loss / n)},
      {"aux_loss", number(w.aux / n)},
      {"z_loss", number(w.z / n)},
      {"tokens_per_s", number(tokens_per_s)},
      {"dropped_share", number(w.dropped_share / n)},
      {"load_max_over_mean", number(w.load_max_over_mean / n)},
      {"lr", number(lr)},
      {"steps_in_window", w.steps},
      {"chosen_per_expert", w.chosen_per_expert},
      {"kept_per_expert", w.kept_per_expert},
      {"forward_ms", phases_ms(w.forward, w.steps)},
      {"backward_ms", phases_ms(w.backward, w.steps)},
      {"wall_ms", ms_per_step(w.wall, w.steps)},
  };
  if (!expert_bias.empty()) line["expert_bias"] = expert_bias;
  const std::string text = line.dump() + "\n";
  if (std::fputs(text.c_str(), file_) < 0 || std::fflush(file_) != 0)
    detail::fail("train", "--metrics '", path_, "': write failed: ", std::strerror(errno));
}

std::string phase_line(const TrainingWindow& w) {
  return "         ms/step fwd:" + ms_text(w.forward, w.steps, true) + " | bwd:" + ms_text(w.backward, w.steps, true) +
         " | wall:" + ms_text(w.wall, w.steps, false);
}

}  // namespace moe::cli
