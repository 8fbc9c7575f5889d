#include "agent/correlator/describe.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace mltap::correlator {

using core::EventKind;
using core::FileOp;
using core::ProcessRef;
using core::SystemEvent;

namespace {

std::string who(const ProcessRef& p) {
  if (!p.known()) return "an unknown process";
  return (p.comm.empty() ? std::string("process") : p.comm) + " (pid " + std::to_string(p.pid) +
         ")";
}

std::string bytes_text(std::uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace

std::string signal_name(int sig) {
  const char* a = sig > 0 ? sigabbrev_np(sig) : nullptr;
  return a ? std::string("SIG") + a : "signal " + std::to_string(sig);
}

std::string errno_name(int err) {
  const char* n = err > 0 ? strerrorname_np(err) : nullptr;
  return n ? n : "error " + std::to_string(err);
}

std::string format_duration(std::uint64_t ns) {
  char buf[48];
  const std::uint64_t ms = ns / 1'000'000ULL;
  const std::uint64_t s = ns / 1'000'000'000ULL;
  if (ns < 1'000'000ULL)
    std::snprintf(buf, sizeof(buf), "%llu us", static_cast<unsigned long long>(ns / 1000));
  else if (ms < 1000)
    std::snprintf(buf, sizeof(buf), "%llu ms", static_cast<unsigned long long>(ms));
  else if (s < 60)
    std::snprintf(buf, sizeof(buf), "%llu s", static_cast<unsigned long long>(s));
  else if (s < 3600)
    std::snprintf(buf, sizeof(buf), "%llum%02llus", static_cast<unsigned long long>(s / 60),
                  static_cast<unsigned long long>(s % 60));
  else
    std::snprintf(buf, sizeof(buf), "%lluh%02llum", static_cast<unsigned long long>(s / 3600),
                  static_cast<unsigned long long>((s / 60) % 60));
  return buf;
}

std::string describe(const SystemEvent& e) {
  const std::string subj = who(e.subject);
  switch (e.kind) {
    case EventKind::exec: return subj + " started program " + e.path;
    case EventKind::fork: return subj + " started " + who(e.other);
    case EventKind::exit:
      if (e.signal != 0) {
        return subj + " was killed by " + signal_name(e.signal) +
               (e.core_dumped ? " (core dumped)" : "");
      }
      return subj + " exited with code " + std::to_string(e.exit_code.value_or(-1));
    case EventKind::oom_kill: {
      std::string s = "OOM killer killed " + subj;
      if (e.memory_bytes) s += " (" + bytes_text(e.memory_bytes) + " virtual)";
      if (e.other.known() && e.other.pid != e.subject.pid)
        s += ", triggered by " + who(e.other);
      else if (e.other.known())
        s += ", triggered by its own allocation";
      return s;
    }
    case EventKind::signal:
      return signal_name(e.signal) + " sent to " + subj + " by " + who(e.other) +
             (e.fatal     ? " (fatal)"
              : e.handled ? " (handled)"
                          : "");
    case EventKind::file_change: {
      std::string s = "model file " + e.path + " ";
      switch (e.file_op) {
        case FileOp::written: s += "written"; break;
        case FileOp::renamed_onto:
          s += "replaced" + (e.old_path.empty() ? std::string(" by a rename")
                                                : " (" + e.old_path + " renamed onto it)");
          break;
        case FileOp::renamed_away:
          s += "renamed away" + (e.old_path.empty() ? std::string() : " to " + e.old_path);
          break;
        case FileOp::deleted: s += "deleted"; break;
        case FileOp::none: s += "changed"; break;
      }
      return s + " by " + who(e.subject) + (e.tracked ? "" : " (untracked)");
    }
    case EventKind::tcp_retransmit:
      return std::to_string(std::max<std::uint32_t>(1, e.tcp.count)) + " TCP retransmit(s) " +
             e.tcp.saddr + ":" + std::to_string(e.tcp.sport) + " -> " + e.tcp.daddr + ":" +
             std::to_string(e.tcp.dport) + " by " + subj;
    case EventKind::tcp_connect_failed:
      return "connect to " + e.tcp.daddr + ":" + std::to_string(e.tcp.dport) + " failed (" +
             (e.tcp.error ? errno_name(e.tcp.error) : std::string("aborted")) + ") from " + subj;
    case EventKind::runqueue_latency:
      return subj + " waited for a CPU: p99 " + format_duration(e.latency.p99_ns) + " over " +
             format_duration(e.latency.interval_ns) + " (" + std::to_string(e.latency.samples) +
             " waits)";
    case EventKind::block_io_latency:
      return subj + " had slow disk I/O: p99 " + format_duration(e.latency.p99_ns) + " over " +
             format_duration(e.latency.interval_ns) + " (" + std::to_string(e.latency.samples) +
             " requests)";
  }
  return subj;
}

}  // namespace mltap::correlator
