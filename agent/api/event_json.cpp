#include "agent/api/event_json.hpp"

#include <limits>
#include <stdexcept>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "agent/correlator/describe.hpp"
#include "core/time.hpp"

namespace mltap::api {

using correlator::describe;
using correlator::errno_name;
using correlator::RelatedEvent;
using correlator::relation_name;
using correlator::signal_name;
using core::event_kind_name;
using core::EventKind;
using core::file_op_name;
using core::FileOp;
using core::parse_event_kind;
using core::parse_file_op;
using core::ProcessRef;
using core::SystemEvent;

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

}  // namespace

json to_json(const SystemEvent& e) {
  json j = {{"kind", std::string(event_kind_name(e.kind))},
            {"time_unix_ns", e.unix_ns},
            {"time", core::format_utc(e.unix_ns, core::UtcStyle::readable)},
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
  j["after_onset"] = r.after_onset;
  return j;
}

json related_json(const std::vector<RelatedEvent>& related) {
  json a = json::array();
  for (const auto& r : related) a.push_back(to_json(r));
  return a;
}

json finding_json(const core::Finding& f) {
  json top = json::array();
  for (const auto& t : f.top) top.push_back(t.feature);
  return {{"id", f.id},
          {"stream", f.stream},
          {"component", f.component},
          {"kind", std::string(core::finding_kind_name(f.kind))},
          {"reason", f.reason},
          {"severity", std::string(core::severity_name(f.severity))},
          {"open", f.open()},
          {"opened_unix_ns", f.opened_unix_ns},
          {"updated_unix_ns", f.updated_unix_ns},
          {"closed_unix_ns", f.closed_unix_ns},
          {"onset_unix_ns", f.onset_or_opened()},
          {"onset_basis", f.onset_unix_ns != 0 ? f.onset_basis : std::string("opened")},
          {"onset_resolution_ns", f.onset_resolution_ns},
          {"supersedes", f.supersedes},
          {"summary", f.summary},
          {"top_features", std::move(top)}};
}

}  // namespace mltap::api
