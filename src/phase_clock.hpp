// Splits the time of a forward or backward into phases (PhaseTimes) without a wait at
// each: lap(p) marks the end of phase p (Ops::mark: on a GPU an event on the stream,
// so the host goes on queuing the next phase's kernels), and finish() waits once and
// adds each phase's time.
#pragma once

#include <cstddef>
#include <vector>

#include "kernels/ops.hpp"

namespace moe {

class PhaseClock {
 public:
  explicit PhaseClock(kernels::Ops& ops) : ops_(ops), start_(ops.mark()) {}
  ~PhaseClock() { ops_.release_marks(start_); }
  PhaseClock(const PhaseClock&) = delete;
  PhaseClock& operator=(const PhaseClock&) = delete;
  void lap(double& phase) { laps_.push_back({&phase, ops_.mark()}); }
  // Waits for the work queued so far (as the waiting laps of before did) and books it.
  void finish() {
    ops_.synchronize();
    std::size_t previous = start_;
    for (const Lap& lap : laps_) {
      *lap.phase += ops_.seconds_between(previous, lap.mark);
      previous = lap.mark;
    }
    laps_.clear();
  }

 private:
  struct Lap {
    double* phase;
    std::size_t mark;
  };
  kernels::Ops& ops_;
  std::size_t start_;
  std::vector<Lap> laps_;
};

}  // namespace moe
