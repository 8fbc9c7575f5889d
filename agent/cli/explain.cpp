#include "agent/cli/explain.hpp"

#include <algorithm>
#include <ostream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "agent/api/event_json.hpp"
#include "agent/api/events_api.hpp"
#include "agent/cli/agent_client.hpp"
#include "agent/correlator/describe.hpp"
#include "core/config_reader.hpp"
#include "core/time.hpp"

namespace mltap::cli {

using api::system_event_from_json;
using correlator::describe;
using correlator::format_duration;
using correlator::RelatedEvent;
using correlator::Relation;
using correlator::relation_name;

using core::event_kind_name;
using core::SystemEvent;

using nlohmann::json;

namespace {

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument("events response: " + what); }

const json& field(const json& j, const char* name, json::value_t type, const char* where) {
  if (!j.is_object()) bad(std::string(where) + " is not an object");
  auto it = j.find(name);
  if (it == j.end()) bad(std::string(where) + "." + name + " is missing");
  const bool ok = it->type() == type ||
                  (type == json::value_t::number_unsigned && it->is_number_integer() &&
                   it->get<std::int64_t>() >= 0) ||
                  (type == json::value_t::number_float && it->is_number());
  if (!ok) bad(std::string(where) + "." + name + " has the wrong type");
  return *it;
}

std::string clock_of(std::uint64_t unix_ns) {
  const std::string t = core::format_utc(unix_ns, core::UtcStyle::readable);  // "YYYY-MM-DD HH:MM:SS.mmmZ"
  return t.size() > 11 ? t.substr(11) : t;
}

std::string pad(std::string s, std::size_t n) {
  if (s.size() < n) s.append(n - s.size(), ' ');
  return s;
}

std::string relation_of(const SystemEvent& e, const std::vector<core::ProducerId>& producers) {
  if (!e.tracked) return "host";
  for (const auto& p : producers) {
    if (e.subject.pid == p.pid && (e.subject.start_ticks == p.start_ticks || p.start_ticks == 0)) return "producer";
  }
  return "child";
}

}  // namespace

ExplainReport parse_explain_report(const json& body) {
  ExplainReport r;
  r.stream = field(body, "stream", json::value_t::string, "response").get<std::string>();
  r.since_unix_ns = field(body, "since_unix_ns", json::value_t::number_unsigned, "response").get<std::uint64_t>();
  r.window_seconds = field(body, "window_seconds", json::value_t::number_float, "response").get<double>();
  for (const auto& p : field(body, "producers", json::value_t::array, "response")) {
    r.producers.push_back({field(p, "pid", json::value_t::number_unsigned, "producer").get<std::uint32_t>(),
                           field(p, "start_ticks", json::value_t::number_unsigned, "producer").get<std::uint64_t>()});
  }
  for (const auto& e : field(body, "events", json::value_t::array, "response")) {
    r.events.push_back(system_event_from_json(e));
  }
  for (const auto& f : field(body, "findings", json::value_t::array, "response")) {
    ExplainFinding x;
    x.id = field(f, "id", json::value_t::number_unsigned, "finding").get<std::uint64_t>();
    x.kind = field(f, "kind", json::value_t::string, "finding").get<std::string>();
    x.severity = field(f, "severity", json::value_t::string, "finding").get<std::string>();
    x.summary = field(f, "summary", json::value_t::string, "finding").get<std::string>();
    x.reason = f.value("reason", std::string());
    x.opened_unix_ns = field(f, "opened_unix_ns", json::value_t::number_unsigned, "finding").get<std::uint64_t>();
    x.open = field(f, "open", json::value_t::boolean, "finding").get<bool>();
    // Onsets came later: an older agent sends none (then the opening is the onset).
    x.onset_unix_ns = f.contains("onset_unix_ns")
                          ? field(f, "onset_unix_ns", json::value_t::number_unsigned, "finding").get<std::uint64_t>()
                          : x.opened_unix_ns;
    if (x.onset_unix_ns > x.opened_unix_ns) bad("finding.onset_unix_ns is after its opened_unix_ns");
    if (f.contains("onset_basis")) x.onset_basis = field(f, "onset_basis", json::value_t::string, "finding").get<std::string>();
    if (f.contains("onset_resolution_ns"))
      x.onset_resolution_ns = field(f, "onset_resolution_ns", json::value_t::number_unsigned, "finding").get<std::uint64_t>();
    if (f.contains("supersedes"))
      x.supersedes = field(f, "supersedes", json::value_t::number_unsigned, "finding").get<std::uint64_t>();
    for (const auto& rj : field(f, "related", json::value_t::array, "finding")) {
      RelatedEvent re;
      re.event = system_event_from_json(rj);
      re.score = field(rj, "score", json::value_t::number_float, "related event").get<double>();
      const std::string rel = field(rj, "relation", json::value_t::string, "related event").get<std::string>();
      if (rel == "producer") re.relation = Relation::producer;
      else if (rel == "producer_child") re.relation = Relation::producer_child;
      else if (rel == "same_component") re.relation = Relation::same_component;
      else if (rel == "host") re.relation = Relation::host;
      else bad("related event has unknown relation '" + rel + "'");
      re.why = rj.value("why", std::string());
      re.after_onset = rj.contains("after_onset")
                           ? field(rj, "after_onset", json::value_t::boolean, "related event").get<bool>()
                           : re.event.unix_ns > x.onset_unix_ns;
      x.related.push_back(std::move(re));
    }
    // Candidate causes first whatever order the agent sent (an older agent mixed them).
    std::stable_partition(x.related.begin(), x.related.end(), [](const RelatedEvent& e) { return !e.after_onset; });
    r.findings.push_back(std::move(x));
  }
  return r;
}

std::string format_explain(const ExplainReport& r, std::size_t max_timeline) {
  std::ostringstream o;
  o << "Stream " << r.stream << ": ";
  if (r.producers.empty()) {
    o << "no producer processes known\n";
  } else {
    o << r.producers.size() << " producer process" << (r.producers.size() == 1 ? "" : "es") << " (";
    for (std::size_t i = 0; i < r.producers.size(); ++i) o << (i ? ", " : "") << "pid " << r.producers[i].pid;
    o << ")\n";
  }
  o << "\n";
  const auto open = std::count_if(r.findings.begin(), r.findings.end(), [](const auto& f) { return f.open; });
  if (r.findings.empty()) {
    o << "Findings: none\n";
  } else {
    o << "Findings (" << open << " open, " << r.findings.size() - static_cast<std::size_t>(open) << " closed):\n";
  }
  for (const auto& f : r.findings) {
    o << "  #" << f.id << " [" << f.severity << "] " << f.kind;
    if (!f.reason.empty()) o << " (" << f.reason << ")";
    o << ", opened " << core::format_utc(f.opened_unix_ns, core::UtcStyle::readable) << (f.open ? " (open)" : " (closed)") << "\n";
    if (!f.summary.empty()) o << "     " << f.summary << "\n";
    o << "     Onset: about " << clock_of(f.onset_unix_ns);
    if (!f.onset_basis.empty()) {
      o << " (" << f.onset_basis;
      if (f.onset_resolution_ns) o << ", up to " << format_duration(f.onset_resolution_ns) << " later";
      o << ")";
    }
    if (f.opened_unix_ns > f.onset_unix_ns) o << ", " << format_duration(f.opened_unix_ns - f.onset_unix_ns) << " before it opened";
    if (f.supersedes != 0) o << "; supersedes #" << f.supersedes << " (a material change)";
    o << "\n";
    const auto first_after = std::find_if(f.related.begin(), f.related.end(), [](const auto& e) { return e.after_onset; });
    if (first_after == f.related.begin()) {
      o << "     No system events of its producers or the host in the " << format_duration(static_cast<std::uint64_t>(r.window_seconds * 1e9)) << " before the onset.\n";
    } else {
      o << "     Possible causes, before the onset, most plausible first:\n";
    }
    std::size_t i = 0;
    for (auto it = f.related.begin(); it != f.related.end(); ++it) {
      const auto& re = *it;
      if (it == first_after) o << "     After the onset (consequences or coincidences, oldest first):\n";
      char score[16];
      std::snprintf(score, sizeof(score), "%.2f", re.score);
      const std::string num = re.after_onset ? "-" : std::to_string(++i) + ".";
      o << "       " << num << " " << score << "  " << clock_of(re.event.unix_ns) << "  " << describe(re.event) << "\n";
      o << "          " << relation_name(re.relation);
      if (f.onset_unix_ns >= re.event.unix_ns) {
        o << ", " << format_duration(f.onset_unix_ns - re.event.unix_ns) << " before the onset";
      } else if (!re.after_onset) {  // within the estimate's resolution
        o << ", at the onset (" << format_duration(re.event.unix_ns - f.onset_unix_ns) << " after its estimate)";
      } else {
        o << ", " << format_duration(re.event.unix_ns - f.onset_unix_ns) << " after the onset";
      }
      if (re.event.unix_ns > f.opened_unix_ns) o << " (" << format_duration(re.event.unix_ns - f.opened_unix_ns) << " after it opened)";
      o << "\n";
    }
  }
  o << "\n";
  const std::size_t n = r.events.size();
  o << "Timeline since " << core::format_utc(r.since_unix_ns, core::UtcStyle::readable) << " (" << n << " event" << (n == 1 ? "" : "s");
  if (n > max_timeline) o << ", newest " << max_timeline << " shown";
  o << "):\n";
  if (n == 0) o << "  (no system events)\n";
  for (std::size_t i = n > max_timeline ? n - max_timeline : 0; i < n; ++i) {
    const auto& e = r.events[i];
    o << "  " << clock_of(e.unix_ns) << "  " << pad(std::string(event_kind_name(e.kind)), 19)
      << pad("[" + relation_of(e, r.producers) + "]", 11) << describe(e) << "\n";
  }
  return o.str();
}

int run_explain(const ExplainArgs& args, std::ostream& out, std::ostream& err) {
  if (!api::valid_stream_name(args.stream)) {
    err << "mltap explain: STREAM must be 1..256 printable characters\n";
    return 2;
  }
  const auto since = core::parse_duration(args.since);
  if (!since || since->count() <= 0) {
    err << "mltap explain: --since must be a duration such as 30m or 2h (got '" << args.since << "')\n";
    return 2;
  }
  std::string error;
  const std::string path = "/api/v1/events?stream=" + percent_encode(args.stream) +
                           "&since=" + percent_encode(args.since);
  auto body = get_json(args.agent_url, path, error);
  if (!body) {
    err << "mltap explain: " << error << "\n";
    return 1;
  }
  if (args.json) {
    out << body->dump(2) << "\n";
    return 0;
  }
  try {
    out << format_explain(parse_explain_report(*body));
  } catch (const std::exception& e) {
    err << "mltap explain: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace mltap::cli
