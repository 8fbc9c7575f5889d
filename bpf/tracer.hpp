// The eBPF tracer: loads mltap.bpf.c's programs (and the fanotify file watcher), keeps the set of
// tracked processes in the kernel, and delivers SystemEvents to a callback from its own thread.
//
// Start-up probes the kernel (BTF, capabilities, ring buffer, each tracepoint as tp_btf, raw_tp
// or tracefs) and loads what it can. A probe that cannot run (no CAP_BPF/CAP_PERFMON, no BTF,
// attach refused, ...) is reported down with the reason, logged once, and the rest runs.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bpf/config.hpp"
#include "core/system_event.hpp"
#include "core/tracer_stats.hpp"

namespace mltap::bpf {

enum class TrackResult : std::uint8_t {
  tracked,          // in the kernel's set now (with its children started from now on)
  already_tracked,  // same (pid, start_ticks) was tracked; component updated
  no_such_process,  // pid gone or (pid, start_ticks) names another process
  table_full,       // max_tracked_processes (or the component table) is full
  invalid,          // pid 0, the agent itself, or start_ticks 0
  userspace_only,   // no BPF probes: remembered for file-event attribution only
};

constexpr std::string_view track_result_name(TrackResult r) noexcept {
  switch (r) {
    case TrackResult::tracked: return "tracked";
    case TrackResult::already_tracked: return "already_tracked";
    case TrackResult::no_such_process: return "no_such_process";
    case TrackResult::table_full: return "table_full";
    case TrackResult::invalid: return "invalid";
    case TrackResult::userspace_only: return "userspace_only";
  }
  return "invalid";
}

struct TracerOptions {
  std::string proc_root = "/proc";  // injectable for tests
  // Where tracefs is (or gets mounted). libbpf attaches tracefs tracepoints through
  // /sys/kernel/tracing (or debugfs' tracing/ when mounted), so change it only for probing.
  std::string tracefs_root = "/sys/kernel/tracing";
  // Fault injection for tests: BPF programs (by name, e.g. "switch_si_btf") to treat as
  // unavailable, so that the fallbacks a different kernel would take get exercised here.
  std::vector<std::string> unavailable_programs;
};

class Tracer {
 public:
  using EventCallback = std::function<void(const core::SystemEvent&)>;

  explicit Tracer(TracerConfig config, TracerOptions options = {});
  ~Tracer();
  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;

  // Probes, loads and attaches, then starts the event thread, which calls `on_event` for every
  // event (never concurrently). Never throws for a missing kernel feature; throws
  // std::logic_error when called twice and std::system_error when the thread cannot start.
  void start(EventCallback on_event);
  // Stops the thread and detaches every probe. Idempotent; also done by the destructor.
  void stop() noexcept;

  // Adds the process to the tracked set; its threads are included and the children it starts
  // from now on are added in the kernel (as are descendants alive now). `start_ticks` must
  // match /proc/<pid>/stat field 22. Thread-safe.
  TrackResult track(std::uint32_t pid, std::uint64_t start_ticks, std::string_view component);
  // Removes the process and the descendants tracked because of it. False if not tracked.
  bool untrack(std::uint32_t pid, std::uint64_t start_ticks);

  // Adds a directory to the file watch at run time (e.g. one a producer declared).
  bool watch_directory(const std::string& dir);

  std::vector<core::ProbeStatus> probe_status() const;
  core::TracerStats stats() const;
  // Per-program run counts and time (kernel BPF statistics).
  std::vector<core::ProgramStats> program_stats() const;
  // Capability names the tracer still needs once started (empty on kernels >= 6.5, where map
  // updates through an fd already held need none). See drop_capabilities().
  std::vector<std::string> capabilities_needed_after_start() const;

  const TracerConfig& config() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mltap::bpf
