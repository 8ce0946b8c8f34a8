// Checkpoint save/load throughput (issue 4), run under moe-run: a checkpoint of at
// least 1 GiB saved and loaded by every rank, against rank 0 writing and reading the
// same number of bytes with plain sequential POSIX I/O in the same run (both writes
// end with fsync, as a save does). Prints one CSV row on rank 0.
//   moe-run -np 2 build/bench/checkpoint_bench --dir /tmp
#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "bench_util.hpp"
#include "moe/checkpoint.hpp"

namespace {

// Plain sequential I/O of `bytes` bytes in 64 MiB writes, then fsync; and back.
void plain_write(const std::string& path, const std::vector<char>& data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + path);
  constexpr std::size_t kBlock = std::size_t{64} << 20;
  for (std::size_t at = 0; at < data.size(); at += kBlock)
    if (::write(fd, data.data() + at, std::min(kBlock, data.size() - at)) < 0) throw std::runtime_error("write failed");
  ::fsync(fd);
  ::close(fd);
}

void plain_read(const std::string& path, std::vector<char>& data) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error("cannot open " + path);
  constexpr std::size_t kBlock = std::size_t{64} << 20;
  for (std::size_t at = 0; at < data.size(); at += kBlock)
    if (::read(fd, data.data() + at, std::min(kBlock, data.size() - at)) < 0) throw std::runtime_error("read failed");
  ::close(fd);
}

}  // namespace

// Cold reads: drop the page cache (needs root; otherwise reads are from the cache).
bool drop_page_cache() {
  ::sync();
  FILE* f = std::fopen("/proc/sys/vm/drop_caches", "w");
  if (!f) return false;
  const bool ok = std::fputs("3", f) >= 0;
  return std::fclose(f) == 0 && ok;
}

int main(int argc, char** argv) {
  CLI::App app{"moe checkpoint save/load benchmark (run it under moe-run)"};
  std::string dir = "/tmp";
  std::int64_t E = 32, H = 1024, F = 4096;
  int reps = 3;
  bool header = false, tune_malloc = false;
  app.add_option("--dir", dir, "where the files go");
  app.add_option("--experts", E, "num_experts (default 32: with H=1024, F=4096 a 1.07 GB checkpoint)");
  app.add_flag("--tune-malloc", tune_malloc, "keep large freed buffers in the heap (mallopt) instead of unmapping them");
  app.add_option("--hidden", H, "hidden_dim");
  app.add_option("--expert-dim", F, "expert_dim");
  app.add_option("--reps", reps, "timed repetitions (median)");
  app.add_flag("--header", header, "print the CSV header first");
  CLI11_PARSE(app, argc, argv);

  auto comm = moe::make_communicator();
  if (tune_malloc) {
    // HDF5's filter pipeline allocates and frees a chunk-sized buffer per chunk; with
    // glibc's defaults every one is a fresh mmap whose pages fault in (docs/design.md §4a).
    mallopt(M_MMAP_THRESHOLD, 512 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
  }
  const moe::MOEConfig config(E, 2, H, F);
  moe::MoELayer layer(config, *comm, 1);
  const std::string ckpt = dir + "/moe-bench-checkpoint.h5", plain = dir + "/moe-bench-plain.bin";

  using Clock = std::chrono::steady_clock;
  auto timed = [&](auto&& work) {
    comm->barrier();
    const auto start = Clock::now();
    work();
    comm->barrier();
    return moe::bench::seconds_since(start);
  };

  moe::save_checkpoint(ckpt, layer, 0);  // warm-up, and the size to match
  const auto bytes = static_cast<std::size_t>(std::filesystem::file_size(ckpt));
  std::vector<char> data;
  if (comm->rank() == 0) data.assign(bytes, 1);

  // Reads are timed twice: from disk (page cache dropped first, when allowed) and from
  // the page cache (the file was just read).
  std::int32_t cold = 1;
  auto uncache = [&] {
    if (comm->rank() == 0 && !drop_page_cache()) cold = 0;
    comm->all_reduce(&cold, 1, moe::DataType::Int32, moe::ReduceOp::Min);
  };
  std::vector<double> save, load, write, read, warm_load, warm_read;
  for (int r = 0; r < reps; ++r) {
    write.push_back(timed([&] { if (comm->rank() == 0) plain_write(plain, data); }));
    save.push_back(timed([&] { moe::save_checkpoint(ckpt, layer, r); }));
    uncache();
    read.push_back(timed([&] { if (comm->rank() == 0) plain_read(plain, data); }));
    warm_read.push_back(timed([&] { if (comm->rank() == 0) plain_read(plain, data); }));
    uncache();
    load.push_back(timed([&] { moe::load_checkpoint(ckpt, layer); }));
    warm_load.push_back(timed([&] { moe::load_checkpoint(ckpt, layer); }));
  }
  if (comm->rank() == 0) {
    const double s = moe::bench::median(save), l = moe::bench::median(load), wl = moe::bench::median(warm_load);
    const double w = moe::bench::median(write), rd = moe::bench::median(read), wrd = moe::bench::median(warm_read);
    const double gb = double(bytes) / 1e9;
    if (header)
      std::printf("ranks,bytes,malloc,save_GBps,plain_write_GBps,save_ratio,%s_load_GBps,plain_read_GBps,load_ratio,"
                  "cached_load_GBps,cached_plain_read_GBps,cached_load_ratio\n", cold ? "disk" : "cached");
    std::printf("%d,%zu,%s,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f\n", comm->size(), bytes,
                tune_malloc ? "tuned" : "default", gb / s, gb / w, w / s, gb / l, gb / rd, rd / l, gb / wl, gb / wrd,
                wrd / wl);
    std::filesystem::remove(ckpt);
    std::filesystem::remove(plain);
  }
  return 0;
}
