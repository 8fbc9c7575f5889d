#include "correlator/event_json.hpp"

#include <cstring>
#include <limits>
#include <type_traits>
#include <ctime>
#include <stdexcept>

namespace mltap::correlate {

using nlohmann::json;

namespace {

json proc_json(const ProcessRef& p) {
  return {{"pid", p.pid}, {"tid", p.tid}, {"start_ticks", p.start_ticks}, {"comm", p.comm}};
}

[[noreturn]] void bad(const std::string& field, const std::string& what) {
  throw std::invalid_argument("event field '" + field + "': " + what);
}

template <typename T>
T get(const json& j, const char* field, bool required = true, T def = T{}) {
  if (!j.is_object()) bad(field, "event is not an object");
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (required) bad(field, "missing");
    return def;
  }
  if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) bad(field, "expected true or false");
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!it->is_string()) bad(field, "expected a string");
  } else if constexpr (std::is_integral_v<T>) {
    if (!it->is_number_integer()) bad(field, "expected an integer");
    if constexpr (std::is_unsigned_v<T>) {
      if (!it->is_number_unsigned()) bad(field, "must not be negative");
      if (it->get<std::uint64_t>() > std::numeric_limits<T>::max()) bad(field, "out of range");
    } else {
      const auto v = it->get<std::int64_t>();
      if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) bad(field, "out of range");
    }
  }
  try {
    return it->get<T>();
  } catch (const std::exception&) {
    bad(field, "wrong type");
  }
}

ProcessRef proc_from(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return {};
  if (!it->is_object()) bad(field, "expected an object");
  ProcessRef p;
  p.pid = get<std::uint32_t>(*it, "pid");
  p.tid = get<std::uint32_t>(*it, "tid", false);
  p.start_ticks = get<std::uint64_t>(*it, "start_ticks", false);
  p.comm = get<std::string>(*it, "comm", false);
  return p;
}

std::string who(const ProcessRef& p) {
  if (!p.known()) return "an unknown process";
  return (p.comm.empty() ? std::string("process") : p.comm) + " (pid " + std::to_string(p.pid) + ")";
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

std::string format_time(std::uint64_t unix_ns) {
  const time_t secs = static_cast<time_t>(unix_ns / 1'000'000'000ULL);
  const unsigned ms = static_cast<unsigned>((unix_ns / 1'000'000ULL) % 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02d %02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

std::string format_duration(std::uint64_t ns) {
  char buf[48];
  const std::uint64_t ms = ns / 1'000'000ULL;
  const std::uint64_t s = ns / 1'000'000'000ULL;
  if (ns < 1'000'000ULL) std::snprintf(buf, sizeof(buf), "%llu us", static_cast<unsigned long long>(ns / 1000));
  else if (ms < 1000) std::snprintf(buf, sizeof(buf), "%llu ms", static_cast<unsigned long long>(ms));
  else if (s < 60) std::snprintf(buf, sizeof(buf), "%llu s", static_cast<unsigned long long>(s));
  else if (s < 3600) std::snprintf(buf, sizeof(buf), "%llum%02llus", static_cast<unsigned long long>(s / 60), static_cast<unsigned long long>(s % 60));
  else std::snprintf(buf, sizeof(buf), "%lluh%02llum", static_cast<unsigned long long>(s / 3600), static_cast<unsigned long long>((s / 60) % 60));
  return buf;
}

std::string describe(const SystemEvent& e) {
  const std::string subj = who(e.subject);
  switch (e.kind) {
    case EventKind::exec: return subj + " started program " + e.path;
    case EventKind::fork: return subj + " started " + who(e.other);
    case EventKind::exit:
      if (e.signal != 0) {
        return subj + " was killed by " + signal_name(e.signal) + (e.core_dumped ? " (core dumped)" : "");
      }
      return subj + " exited with code " + std::to_string(e.exit_code.value_or(-1));
    case EventKind::oom_kill: {
      std::string s = "OOM killer killed " + subj;
      if (e.memory_bytes) s += " (" + bytes_text(e.memory_bytes) + " virtual)";
      if (e.other.known() && e.other.pid != e.subject.pid) s += ", triggered by " + who(e.other);
      else if (e.other.known()) s += ", triggered by its own allocation";
      return s;
    }
    case EventKind::signal:
      return signal_name(e.signal) + " sent to " + subj + " by " + who(e.other) +
             (e.fatal ? " (fatal)" : e.handled ? " (handled)" : "");
    case EventKind::file_change: {
      std::string s = "model file " + e.path + " ";
      switch (e.file_op) {
        case FileOp::written: s += "written"; break;
        case FileOp::renamed_onto: s += "replaced" + (e.old_path.empty() ? std::string(" by a rename") : " (" + e.old_path + " renamed onto it)"); break;
        case FileOp::renamed_away: s += "renamed away" + (e.old_path.empty() ? std::string() : " to " + e.old_path); break;
        case FileOp::deleted: s += "deleted"; break;
        case FileOp::none: s += "changed"; break;
      }
      return s + " by " + who(e.subject) + (e.tracked ? "" : " (untracked)");
    }
    case EventKind::tcp_retransmit:
      return std::to_string(std::max<std::uint32_t>(1, e.tcp.count)) + " TCP retransmit(s) " + e.tcp.saddr + ":" +
             std::to_string(e.tcp.sport) + " -> " + e.tcp.daddr + ":" + std::to_string(e.tcp.dport) +
             " by " + subj;
    case EventKind::tcp_connect_failed:
      return "connect to " + e.tcp.daddr + ":" + std::to_string(e.tcp.dport) + " failed (" +
             (e.tcp.error ? errno_name(e.tcp.error) : std::string("aborted")) + ") from " + subj;
    case EventKind::runqueue_latency:
      return subj + " waited for a CPU: p99 " + format_duration(e.latency.p99_ns) + " over " +
             format_duration(e.latency.interval_ns) + " (" + std::to_string(e.latency.samples) + " waits)";
    case EventKind::block_io_latency:
      return subj + " had slow disk I/O: p99 " + format_duration(e.latency.p99_ns) + " over " +
             format_duration(e.latency.interval_ns) + " (" + std::to_string(e.latency.samples) + " requests)";
  }
  return subj;
}

json to_json(const SystemEvent& e) {
  json j = {{"kind", std::string(event_kind_name(e.kind))},
            {"time_unix_ns", e.unix_ns},
            {"time", format_time(e.unix_ns)},
            {"boot_ns", e.boot_ns},
            {"subject", proc_json(e.subject)},
            {"tracked", e.tracked},
            {"component", e.component},
            {"source", e.source},
            {"summary", describe(e)}};
  if (e.root.known()) j["root"] = proc_json(e.root);
  if (e.other.known()) {
    j["other"] = proc_json(e.other);
    j["other_tracked"] = e.other_tracked;
  }
  switch (e.kind) {
    case EventKind::exec: j["path"] = e.path; break;
    case EventKind::exit:
      if (e.exit_code) j["exit_code"] = *e.exit_code;
      if (e.signal) {
        j["signal"] = e.signal;
        j["signal_name"] = signal_name(e.signal);
        j["core_dumped"] = e.core_dumped;
        j["fatal"] = e.fatal;
      }
      break;
    case EventKind::signal:
      j["signal"] = e.signal;
      j["signal_name"] = signal_name(e.signal);
      j["fatal"] = e.fatal;
      j["handled"] = e.handled;
      j["signal_code"] = e.signal_code;
      break;
    case EventKind::oom_kill:
      j["memory_bytes"] = e.memory_bytes;
      j["rss_bytes"] = e.rss_bytes;
      j["oom_score_adj"] = e.oom_score_adj;
      break;
    case EventKind::file_change:
      j["path"] = e.path;
      j["file_op"] = std::string(file_op_name(e.file_op));
      if (!e.old_path.empty()) j["old_path"] = e.old_path;
      break;
    case EventKind::tcp_retransmit:
    case EventKind::tcp_connect_failed:
      j["tcp"] = {{"saddr", e.tcp.saddr}, {"daddr", e.tcp.daddr}, {"sport", e.tcp.sport},
                  {"dport", e.tcp.dport}, {"error", e.tcp.error}, {"count", e.tcp.count}};
      if (e.tcp.error) j["tcp"]["error_name"] = errno_name(e.tcp.error);
      break;
    case EventKind::runqueue_latency:
    case EventKind::block_io_latency:
      j["latency"] = {{"interval_ns", e.latency.interval_ns}, {"samples", e.latency.samples},
                      {"p50_ns", e.latency.p50_ns}, {"p99_ns", e.latency.p99_ns},
                      {"max_ns", e.latency.max_ns}};
      break;
    case EventKind::fork: break;
  }
  return j;
}

SystemEvent system_event_from_json(const json& j) {
  SystemEvent e;
  const auto kind = parse_event_kind(get<std::string>(j, "kind"));
  if (!kind) bad("kind", "unknown event kind '" + get<std::string>(j, "kind") + "'");
  e.kind = *kind;
  e.unix_ns = get<std::uint64_t>(j, "time_unix_ns");
  e.boot_ns = get<std::uint64_t>(j, "boot_ns", false);
  e.subject = proc_from(j, "subject");
  e.root = proc_from(j, "root");
  e.other = proc_from(j, "other");
  e.tracked = get<bool>(j, "tracked", false);
  e.other_tracked = get<bool>(j, "other_tracked", false);
  e.component = get<std::string>(j, "component", false);
  e.source = get<std::string>(j, "source", false);
  e.path = get<std::string>(j, "path", false);
  e.old_path = get<std::string>(j, "old_path", false);
  if (j.contains("exit_code") && !j["exit_code"].is_null()) e.exit_code = get<int>(j, "exit_code");
  e.signal = get<int>(j, "signal", false);
  e.core_dumped = get<bool>(j, "core_dumped", false);
  e.fatal = get<bool>(j, "fatal", false);
  e.handled = get<bool>(j, "handled", false);
  e.signal_code = get<int>(j, "signal_code", false);
  e.memory_bytes = get<std::uint64_t>(j, "memory_bytes", false);
  e.rss_bytes = get<std::uint64_t>(j, "rss_bytes", false);
  e.oom_score_adj = get<int>(j, "oom_score_adj", false);
  if (j.contains("file_op")) {
    const auto op = parse_file_op(get<std::string>(j, "file_op"));
    if (!op) bad("file_op", "unknown operation");
    e.file_op = *op;
  }
  if (auto t = j.find("tcp"); t != j.end() && t->is_object()) {
    e.tcp.saddr = get<std::string>(*t, "saddr", false);
    e.tcp.daddr = get<std::string>(*t, "daddr", false);
    e.tcp.sport = get<std::uint16_t>(*t, "sport", false);
    e.tcp.dport = get<std::uint16_t>(*t, "dport", false);
    e.tcp.error = get<int>(*t, "error", false);
    e.tcp.count = get<std::uint32_t>(*t, "count", false);
  }
  if (auto l = j.find("latency"); l != j.end() && l->is_object()) {
    e.latency.interval_ns = get<std::uint64_t>(*l, "interval_ns", false);
    e.latency.samples = get<std::uint64_t>(*l, "samples", false);
    e.latency.p50_ns = get<std::uint64_t>(*l, "p50_ns", false);
    e.latency.p99_ns = get<std::uint64_t>(*l, "p99_ns", false);
    e.latency.max_ns = get<std::uint64_t>(*l, "max_ns", false);
  }
  return e;
}

json to_json(const RelatedEvent& r) {
  json j = to_json(r.event);
  j["score"] = r.score;
  j["relation"] = std::string(relation_name(r.relation));
  j["why"] = r.why;
  return j;
}

json related_json(const std::vector<RelatedEvent>& related) {
  json a = json::array();
  for (const auto& r : related) a.push_back(to_json(r));
  return a;
}

json finding_json(const detect::Finding& f) {
  json top = json::array();
  for (const auto& t : f.top) top.push_back(t.feature);
  return {{"id", f.id},
          {"stream", f.stream},
          {"component", f.component},
          {"kind", std::string(detect::finding_kind_name(f.kind))},
          {"reason", f.reason},
          {"severity", std::string(detect::severity_name(f.severity))},
          {"open", f.open()},
          {"opened_unix_ns", f.opened_unix_ns},
          {"updated_unix_ns", f.updated_unix_ns},
          {"closed_unix_ns", f.closed_unix_ns},
          {"summary", f.summary},
          {"top_features", std::move(top)}};
}

}  // namespace mltap::correlate
