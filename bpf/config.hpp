// The `ebpf:` section of mltapd's configuration (docs/ebpf.md lists every key).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/config_reader.hpp"

namespace mltap::bpf {

// One row of mltap_ebpf_probe_up{probe}.
enum class Probe : std::uint8_t {
  exec,
  fork,
  exit,
  signal,
  oom_kill,
  runqueue,
  block_io,
  tcp_retransmit,
  tcp_connect,
  file_watch,     // fanotify on files.watch_dirs
  file_syscalls,  // syscall tracepoints, tracked processes only; off by default (costs everyone)
};
inline constexpr std::size_t kProbeCount = 11;

constexpr std::string_view probe_name(Probe p) noexcept {
  switch (p) {
    case Probe::exec: return "exec";
    case Probe::fork: return "fork";
    case Probe::exit: return "exit";
    case Probe::signal: return "signal";
    case Probe::oom_kill: return "oom_kill";
    case Probe::runqueue: return "runqueue";
    case Probe::block_io: return "block_io";
    case Probe::tcp_retransmit: return "tcp_retransmit";
    case Probe::tcp_connect: return "tcp_connect";
    case Probe::file_watch: return "file_watch";
    case Probe::file_syscalls: return "file_syscalls";
  }
  return "unknown";
}

constexpr std::optional<Probe> parse_probe(std::string_view s) noexcept {
  for (std::size_t i = 0; i < kProbeCount; ++i) {
    if (probe_name(static_cast<Probe>(i)) == s) return static_cast<Probe>(i);
  }
  return std::nullopt;
}

// How BPF programs attach. `automatic` tries tp_btf, then raw_tp, then tracefs per probe.
enum class AttachMode : std::uint8_t { automatic, tp_btf, raw_tp, tracefs };

constexpr std::string_view attach_mode_name(AttachMode m) noexcept {
  switch (m) {
    case AttachMode::automatic: return "auto";
    case AttachMode::tp_btf: return "tp_btf";
    case AttachMode::raw_tp: return "raw_tp";
    case AttachMode::tracefs: return "tracefs";
  }
  return "auto";
}

// Globs matched against a file's name (not its directory), fnmatch(3) syntax.
std::vector<std::string> default_model_patterns();

struct FileConfig {
  std::vector<std::string> patterns = default_model_patterns();
  // Directories whose model files are watched for every writer (fanotify; not recursive).
  std::vector<std::string> watch_dirs;
  // false: changes in watch_dirs by untracked processes are not reported.
  bool report_untracked_actors = true;
};

struct TracerConfig {
  bool enabled = true;
  AttachMode attach_mode = AttachMode::automatic;
  std::array<bool, kProbeCount> probes = {true, true, true, true, true, true,
                                          true, true, true, true, false};
  FileConfig files;
  std::uint64_t ring_buffer_bytes = 256 * 1024;    // power of two, >= one page
  std::uint32_t max_tracked_processes = 4096;      // kernel's tracked set, incl. children
  bool report_threads = false;                     // fork/exit events for threads too
  std::chrono::nanoseconds tcp_retransmit_min_interval = std::chrono::seconds(1);  // per socket
  // Derived latency events: a tracked process whose p99 over `summary_interval` reaches the
  // threshold gets a runqueue_latency / block_io_latency event. 0 disables.
  std::chrono::nanoseconds summary_interval = std::chrono::seconds(10);
  std::chrono::nanoseconds runqueue_report_threshold = std::chrono::milliseconds(10);
  std::chrono::nanoseconds block_io_report_threshold = std::chrono::milliseconds(100);
  std::uint64_t latency_min_samples = 20;
  bool mount_tracefs = true;  // mount /sys/kernel/tracing if a tracefs probe needs it
  std::string btf_path;       // BTF for CO-RE when the kernel has none; empty = kernel's

  bool probe_enabled(Probe p) const noexcept {
    return enabled && probes[static_cast<std::size_t>(p)];
  }
};

// Parses `section` (the value of `ebpf:`) strictly; throws core::ConfigError naming the key.
TracerConfig parse_tracer_config(core::ConfigSection& section);

}  // namespace mltap::bpf
