// A real producer process for multi-process tests: writes deterministic rows to one stream and
// prints its exact local counters as JSON on exit, so tests can compare them with what mltapd
// reports. Values: row r of thread t, feature f = (t * 1000003 + r) % 1000 + f * 0.5, plus NaN/Inf
// at configured rates.
//
// For fault injection (tests/integration/test_faults.py): --progress FILE keeps two counters in a
// shared mapping of FILE that outlive a SIGKILL (the page cache keeps them): rows handed to
// write_batch so far (stored before the call) and rows whose write_batch returned (stored after).
// A process killed at any instruction therefore leaves the truth as an interval [done, intent].
// --latency-out FILE writes every write_batch call's duration (ns, uint32 little-endian) there at
// exit.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "mltap/stream.hpp"

int main(int argc, char** argv) {
  CLI::App app{"mltap test producer"};
  std::string name = "test/stream", component = "testproducer";
  std::uint64_t rows = 1000;
  std::uint32_t features = 8, threads = 1, batch = 1, lanes = 16;
  std::uint32_t budget = 0;
  std::uint64_t ring = 1u << 20;
  double rate = 0;  // rows/s per thread, 0 = as fast as possible
  std::uint64_t nan_every = 0, inf_every = 0;
  bool trace_ids = false, hold = false, ready_line = false;
  double hold_seconds = 0;
  std::string progress_path, latency_path;
  app.add_option("--name", name);
  app.add_option("--component", component);
  app.add_option("--rows", rows, "rows per thread");
  app.add_option("--features", features);
  app.add_option("--threads", threads);
  app.add_option("--batch", batch, "rows per write call");
  app.add_option("--lanes", lanes);
  app.add_option("--budget", budget, "sampling budget rows/s (0 = unlimited)");
  app.add_option("--ring", ring, "ring bytes per lane");
  app.add_option("--rate", rate, "rows per second per thread");
  app.add_option("--nan-every", nan_every, "feature 0 is NaN every N rows");
  app.add_option("--inf-every", inf_every, "feature 1 is +Inf every N rows");
  app.add_flag("--trace-ids", trace_ids);
  app.add_flag("--hold", hold, "after writing, wait until killed");
  app.add_option("--hold-seconds", hold_seconds, "after writing, wait this long");
  app.add_flag("--ready-line", ready_line, "print READY <segment> once the stream exists");
  app.add_option("--progress", progress_path, "file: [rows handed to write, rows written] (u64)");
  app.add_option("--latency-out", latency_path, "file: each write call's duration in ns (u32)");
  CLI11_PARSE(app, argc, argv);

  mltap::StreamOptions o;
  o.component = component;
  for (std::uint32_t f = 0; f < features; ++f) o.features.push_back("f" + std::to_string(f));
  o.dtype = mltap::DType::float32;
  o.sampling_budget = budget;
  o.ring_bytes = ring;
  o.lanes = lanes;
  // Before the stream exists, so that a kill at any later point leaves the counters readable.
  std::atomic<std::uint64_t>* progress = nullptr;
  if (!progress_path.empty()) {
    const int fd = ::open(progress_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ::ftruncate(fd, 4096) != 0) {
      std::perror("--progress");
      return 1;
    }
    void* m = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (m == MAP_FAILED) {
      std::perror("--progress mmap");
      return 1;
    }
    progress = static_cast<std::atomic<std::uint64_t>*>(m);
  }
  const bool timed = !latency_path.empty();
  std::vector<std::vector<std::uint32_t>> latencies(threads);
  mltap::Stream stream(name, o);
  if (ready_line) {
    std::printf("READY %s\n", stream.segment_path().c_str());
    std::fflush(stdout);
  }

  std::vector<std::thread> pool;
  for (std::uint32_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::vector<float> buf(static_cast<std::size_t>(batch) * features);
      std::vector<std::uint64_t> ids(batch);
      const auto start = std::chrono::steady_clock::now();
      for (std::uint64_t r = 0; r < rows; r += batch) {
        const std::uint32_t n = static_cast<std::uint32_t>(std::min<std::uint64_t>(batch, rows - r));
        for (std::uint32_t b = 0; b < n; ++b) {
          const std::uint64_t row = r + b;
          for (std::uint32_t f = 0; f < features; ++f) {
            float v = static_cast<float>((t * 1000003ull + row) % 1000) + 0.5f * static_cast<float>(f);
            if (f == 0 && nan_every && row % nan_every == 0) v = std::numeric_limits<float>::quiet_NaN();
            if (f == 1 && inf_every && row % inf_every == 0) v = std::numeric_limits<float>::infinity();
            buf[b * features + f] = v;
          }
          ids[b] = (static_cast<std::uint64_t>(t) << 40) | row;
        }
        if (progress) progress[2 * t].store(r + n, std::memory_order_release);
        const auto t0 = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
        stream.write_batch(buf.data(), n, features,
                           trace_ids ? std::span<const std::uint64_t>(ids.data(), n)
                                     : std::span<const std::uint64_t>());
        if (timed) {
          const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::steady_clock::now() - t0).count();
          latencies[t].push_back(static_cast<std::uint32_t>(std::min<long long>(ns, UINT32_MAX)));
        }
        if (progress) progress[2 * t + 1].store(r + n, std::memory_order_release);
        if (rate > 0) {
          const auto due = start + std::chrono::duration<double>(static_cast<double>(r + n) / rate);
          std::this_thread::sleep_until(due);
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  if (timed) {
    if (FILE* f = std::fopen(latency_path.c_str(), "wb")) {
      for (const auto& l : latencies) std::fwrite(l.data(), sizeof(std::uint32_t), l.size(), f);
      std::fclose(f);
    }
  }
  const auto s = stream.stats();
  std::printf(
      "{\"rows_written\": %llu, \"rows_committed\": %llu, \"rows_sampled_out\": %llu, "
      "\"rows_too_large\": %llu, \"rows_bad_input\": %llu, \"rows_no_lane\": %llu, "
      "\"rows_no_ring\": %llu, \"segment\": \"%s\", \"pid\": %d}\n",
      (unsigned long long)s.rows_written, (unsigned long long)s.rows_committed,
      (unsigned long long)s.rows_sampled_out, (unsigned long long)s.rows_too_large,
      (unsigned long long)s.rows_bad_input, (unsigned long long)s.rows_no_lane,
      (unsigned long long)s.rows_no_ring, stream.segment_path().c_str(), (int)getpid());
  std::fflush(stdout);
  if (hold) {
    for (;;) pause();
  }
  if (hold_seconds > 0) std::this_thread::sleep_for(std::chrono::duration<double>(hold_seconds));
  return 0;
}
