// One self-overwriting status line for long commands, on rank 0's terminal only: when
// stderr is not a TTY (a log file, CI) it prints nothing, so logs get no spam.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace moe::cli {

class ProgressLine {
 public:
  ProgressLine(const char* command, bool root) : command_(command), enabled_(root && isatty(fileno(stderr))) {}
  ~ProgressLine() { clear(); }

  // "moe infer: [2/4] loading the checkpoint … 1.3 s"
  void stage(int index, int count, const std::string& what) {
    if (!enabled_) return;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::fprintf(stderr, "\r\033[K%s: [%d/%d] %s … %.1f s", command_, index, count, what.c_str(), seconds);
    std::fflush(stderr);
    shown_ = true;
  }
  // Erases the line, so the command's own last line follows cleanly.
  void clear() {
    if (!shown_) return;
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
    shown_ = false;
  }

 private:
  const char* command_;
  bool enabled_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace moe::cli
