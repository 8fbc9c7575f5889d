// A system event of a tracked process (or a host-wide one such as an OOM kill), as the eBPF
// tracer delivers it and the correlator stores it. Plain data: no libbpf, no kernel headers, so
// the correlator, the HTTP API and the CLI can use it without the BPF build.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mltap::core {

enum class EventKind : std::uint8_t {
  exec,                // a tracked process ran a new program
  fork,                // a tracked process started a child (or a thread, if configured)
  exit,                // a tracked process ended: exit code or terminating signal
  oom_kill,            // the OOM killer chose a victim (any process on the host)
  signal,              // a fatal signal (or a stop request to a handler) reached a tracked process
  file_change,         // a model/artifact file was written, renamed onto or deleted
  tcp_retransmit,      // a socket of a tracked process retransmitted
  tcp_connect_failed,  // a connect() of a tracked process failed (refused, timed out, aborted)
  runqueue_latency,    // derived: a tracked process waited long for a CPU (interval p99)
  block_io_latency,    // derived: a tracked process's block I/O was slow (interval p99)
};
inline constexpr std::size_t kEventKindCount = 10;

constexpr std::string_view event_kind_name(EventKind k) noexcept {
  switch (k) {
    case EventKind::exec: return "exec";
    case EventKind::fork: return "fork";
    case EventKind::exit: return "exit";
    case EventKind::oom_kill: return "oom_kill";
    case EventKind::signal: return "signal";
    case EventKind::file_change: return "file_change";
    case EventKind::tcp_retransmit: return "tcp_retransmit";
    case EventKind::tcp_connect_failed: return "tcp_connect_failed";
    case EventKind::runqueue_latency: return "runqueue_latency";
    case EventKind::block_io_latency: return "block_io_latency";
  }
  return "unknown";
}

constexpr std::optional<EventKind> parse_event_kind(std::string_view s) noexcept {
  for (std::size_t i = 0; i < kEventKindCount; ++i) {
    const auto k = static_cast<EventKind>(i);
    if (event_kind_name(k) == s) return k;
  }
  return std::nullopt;
}

enum class FileOp : std::uint8_t {
  none,
  written,       // opened for writing (reported when closed, or at open by the syscall probe)
  renamed_onto,  // another file was renamed onto this path (atomic replace)
  renamed_away,  // this path was renamed to something else
  deleted,
};

constexpr std::string_view file_op_name(FileOp op) noexcept {
  switch (op) {
    case FileOp::none: return "none";
    case FileOp::written: return "written";
    case FileOp::renamed_onto: return "renamed_onto";
    case FileOp::renamed_away: return "renamed_away";
    case FileOp::deleted: return "deleted";
  }
  return "none";
}

constexpr std::optional<FileOp> parse_file_op(std::string_view s) noexcept {
  for (auto op : {FileOp::none, FileOp::written, FileOp::renamed_onto, FileOp::renamed_away,
                  FileOp::deleted}) {
    if (file_op_name(op) == s) return op;
  }
  return std::nullopt;
}

// A process identified the way producers identify themselves: (pid, start_ticks), where
// start_ticks is /proc/<pid>/stat field 22. pid 0 means "none".
struct ProcessRef {
  std::uint32_t pid = 0;          // thread-group id
  std::uint32_t tid = 0;          // thread, when it matters (0 = unknown)
  std::uint64_t start_ticks = 0;  // 0 = unknown
  std::string comm;
  bool known() const noexcept { return pid != 0; }
  bool same_process(std::uint32_t p, std::uint64_t ticks) const noexcept {
    return pid == p && (start_ticks == ticks || start_ticks == 0 || ticks == 0);
  }
};

struct TcpDetail {
  std::string saddr;  // textual address ("10.0.0.1", "::1")
  std::string daddr;
  std::uint16_t sport = 0;
  std::uint16_t dport = 0;
  int error = 0;           // errno at close for failed connects (ECONNREFUSED, ETIMEDOUT, 0)
  std::uint32_t count = 0; // retransmits folded into this event
};

struct LatencySummary {
  std::uint64_t interval_ns = 0;  // the interval the figures cover
  std::uint64_t samples = 0;
  std::uint64_t p50_ns = 0;       // upper bounds of log2 buckets
  std::uint64_t p99_ns = 0;
  std::uint64_t max_ns = 0;
};

struct SystemEvent {
  EventKind kind = EventKind::exec;
  std::uint64_t boot_ns = 0;  // kernel timestamp, CLOCK_BOOTTIME
  std::uint64_t unix_ns = 0;  // wall clock, converted by the tracer (docs/ebpf.md)
  // exec/exit/fork(parent)/signal(target)/oom_kill(victim)/file_change(actor)/tcp(owner)/latency
  ProcessRef subject;
  // fork: child; signal: sender; oom_kill: the task whose allocation triggered it
  ProcessRef other;
  // The explicitly tracked process (producer) whose tree the subject belongs to; pid 0 if none.
  ProcessRef root;
  std::string component;      // component of the tracked tree; empty for untracked subjects
  bool tracked = false;       // subject is a tracked process
  bool other_tracked = false;
  std::string source;         // "bpf:<method>", "fanotify", "derived"

  // exit
  std::optional<int> exit_code;  // set when the process exited normally
  int signal = 0;                // exit: terminating signal; signal: the signal number
  bool core_dumped = false;
  // signal
  bool fatal = false;    // the signal kills the process (default action, or SIGKILL)
  bool handled = false;  // the process installed a handler (stop requests are still reported)
  int signal_code = 0;   // si_code
  // exec: the program; file_change: the path (the new path for renamed_onto)
  std::string path;
  std::string old_path;  // file_change renames: the other path (may be empty if not seen)
  FileOp file_op = FileOp::none;
  // oom_kill
  std::uint64_t memory_bytes = 0;  // victim's total virtual memory
  std::uint64_t rss_bytes = 0;     // victim's resident memory when known (tracefs variant)
  int oom_score_adj = 0;
  TcpDetail tcp;
  LatencySummary latency;

  // The process whose timeline this event belongs to: the producer (root) if known, else the
  // subject. Host-wide events of untracked processes have tracked == false.
  const ProcessRef& owner() const noexcept { return root.known() ? root : subject; }
};

}  // namespace mltap::core
