// JSON round trips of every event kind, hostile JSON, and the explain text.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "agent/api/event_json.hpp"
#include "agent/api/events_api.hpp"
#include "agent/cli/explain.hpp"
#include "agent/correlator/describe.hpp"
#include "core/time.hpp"
#include "test_events.hpp"

namespace mltap::correlator::test {

using core::event_kind_name;
using core::EventKind;
using core::FileOp;
using core::kEventKindCount;
using core::ProcessRef;
using core::SystemEvent;

using api::events_response;
using api::system_event_from_json;
using api::to_json;
using cli::ExplainReport;
using cli::format_explain;
using cli::parse_explain_report;

namespace {

using nlohmann::json;

std::vector<SystemEvent> one_of_each() {
  const ProcessRef p = proc(1000, 5000), c = proc(1001, 5001, "sh");
  std::vector<SystemEvent> v;
  SystemEvent e = tracked(EventKind::exec, kT0 + 1, c, p);
  e.path = "/bin/sh";
  v.push_back(e);
  e = tracked(EventKind::fork, kT0 + 2, p, p);
  e.other = c;
  e.other_tracked = true;
  v.push_back(e);
  e = tracked(EventKind::exit, kT0 + 3, c, p);
  e.exit_code = 3;
  v.push_back(e);
  e = tracked(EventKind::exit, kT0 + 4, p, p);
  e.signal = 9;
  e.core_dumped = false;
  e.fatal = true;
  v.push_back(e);
  e = tracked(EventKind::oom_kill, kT0 + 5, p, p);
  e.other = p;
  e.other_tracked = true;
  e.memory_bytes = 512ULL << 20;
  e.rss_bytes = 400ULL << 20;
  e.oom_score_adj = -100;
  v.push_back(e);
  e = tracked(EventKind::signal, kT0 + 6, p, p);
  e.signal = 15;
  e.handled = true;
  e.signal_code = 0;
  e.other = proc(1, 1, "init");
  v.push_back(e);
  e = host(EventKind::file_change, kT0 + 7, proc(4242, 9000, "mv"));
  e.file_op = FileOp::renamed_onto;
  e.path = "/srv/models/model.onnx";
  e.old_path = "/srv/models/.tmp";
  v.push_back(e);
  e = tracked(EventKind::tcp_retransmit, kT0 + 8, p, p);
  e.tcp = {"10.0.0.1", "10.0.0.2", 40000, 5432, 0, 3};
  v.push_back(e);
  e = tracked(EventKind::tcp_connect_failed, kT0 + 9, p, p);
  e.tcp = {"127.0.0.1", "127.0.0.1", 40001, 6379, 111, 0};
  v.push_back(e);
  e = tracked(EventKind::runqueue_latency, kT0 + 10, p, p);
  e.source = "derived";
  e.latency = {10'000'000'000ULL, 300, 1 << 20, 1 << 24, 1 << 25};
  v.push_back(e);
  e = tracked(EventKind::block_io_latency, kT0 + 11, p, p);
  e.latency = {10'000'000'000ULL, 50, 1 << 22, 1 << 27, 1 << 28};
  v.push_back(e);
  return v;
}

void expect_same(const SystemEvent& a, const SystemEvent& b) {
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.unix_ns, b.unix_ns);
  EXPECT_EQ(a.boot_ns, b.boot_ns);
  EXPECT_EQ(a.subject.pid, b.subject.pid);
  EXPECT_EQ(a.subject.start_ticks, b.subject.start_ticks);
  EXPECT_EQ(a.subject.comm, b.subject.comm);
  EXPECT_EQ(a.root.pid, b.root.pid);
  EXPECT_EQ(a.root.start_ticks, b.root.start_ticks);
  EXPECT_EQ(a.other.pid, b.other.pid);
  EXPECT_EQ(a.tracked, b.tracked);
  EXPECT_EQ(a.other_tracked, b.other_tracked);
  EXPECT_EQ(a.component, b.component);
  EXPECT_EQ(a.source, b.source);
  EXPECT_EQ(a.exit_code, b.exit_code);
  EXPECT_EQ(a.signal, b.signal);
  EXPECT_EQ(a.fatal, b.fatal);
  EXPECT_EQ(a.handled, b.handled);
  EXPECT_EQ(a.path, b.path);
  EXPECT_EQ(a.old_path, b.old_path);
  EXPECT_EQ(a.file_op, b.file_op);
  EXPECT_EQ(a.memory_bytes, b.memory_bytes);
  EXPECT_EQ(a.oom_score_adj, b.oom_score_adj);
  EXPECT_EQ(a.tcp.daddr, b.tcp.daddr);
  EXPECT_EQ(a.tcp.dport, b.tcp.dport);
  EXPECT_EQ(a.tcp.error, b.tcp.error);
  EXPECT_EQ(a.tcp.count, b.tcp.count);
  EXPECT_EQ(a.latency.p99_ns, b.latency.p99_ns);
  EXPECT_EQ(a.latency.samples, b.latency.samples);
}

TEST(EventJson, RoundTripsEveryKind) {
  const auto events = one_of_each();
  ASSERT_EQ(events.size(), kEventKindCount + 1);
  for (const auto& e : events) {
    const json j = to_json(e);
    EXPECT_EQ(j["kind"], std::string(event_kind_name(e.kind)));
    EXPECT_FALSE(j["summary"].get<std::string>().empty());
    // Through text, as a client would see it.
    expect_same(e, system_event_from_json(json::parse(j.dump())));
  }
}

TEST(EventJson, Summaries) {
  const auto v = one_of_each();
  EXPECT_EQ(describe(v[2]), "sh (pid 1001) exited with code 3");
  EXPECT_EQ(describe(v[3]), "python3 (pid 1000) was killed by SIGKILL");
  EXPECT_EQ(describe(v[6]),
            "model file /srv/models/model.onnx replaced (/srv/models/.tmp renamed onto it) by mv "
            "(pid 4242) (untracked)");
  EXPECT_EQ(describe(v[8]), "connect to 127.0.0.1:6379 failed (ECONNREFUSED) from python3 (pid 1000)");
  EXPECT_NE(describe(v[4]).find("triggered by its own allocation"), std::string::npos);
  EXPECT_EQ(core::format_utc(1'700'000'000'123'000'000ULL, core::UtcStyle::readable), "2023-11-14 22:13:20.123Z");
  EXPECT_EQ(format_duration(5 * kMin), "5m00s");
  EXPECT_EQ(format_duration(1500'000'000ULL), "1 s");
  EXPECT_EQ(format_duration(16'000'000ULL), "16 ms");
  EXPECT_EQ(signal_name(9), "SIGKILL");
  EXPECT_EQ(signal_name(200), "signal 200");
  EXPECT_EQ(errno_name(111), "ECONNREFUSED");
}

TEST(EventJson, HostileInputIsRejectedWithTheField) {
  const json good = to_json(one_of_each()[0]);
  auto expect_bad = [](const json& j, const std::string& needle) {
    try {
      system_event_from_json(j);
      ADD_FAILURE() << "accepted " << j.dump();
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  json j = good;
  j.erase("kind");
  expect_bad(j, "kind");
  j = good;
  j["kind"] = "kprobe";
  expect_bad(j, "kind");
  j = good;
  j["time_unix_ns"] = "yesterday";
  expect_bad(j, "time_unix_ns");
  j = good;
  j["time_unix_ns"] = -5;
  expect_bad(j, "time_unix_ns");
  j = good;
  j["subject"] = 3;
  expect_bad(j, "subject");
  j = good;
  j["subject"]["pid"] = "1";
  expect_bad(j, "pid");
  j = good;
  j["file_op"] = "exploded";
  expect_bad(j, "file_op");
  expect_bad(json::array(), "kind");
  expect_bad(json(nullptr), "kind");
}

TEST(Explain, TextNamesTheModelChangeFirst) {
  Correlator c;
  const ProcessRef p = proc(1000, 5000);
  c.note_producer("scores", "inference", {p.pid, p.start_ticks});
  for (auto e : one_of_each()) {
    e.unix_ns = kT0 - 20 * kMin + (e.unix_ns - kT0) * kSec;  // spread over the window
    c.add_event(e);
  }
  SystemEvent swap = host(EventKind::file_change, kT0 - 2 * kMin, proc(4242, 9000, "mv"));
  swap.file_op = FileOp::renamed_onto;
  swap.path = "/srv/models/model.onnx";
  c.add_event(swap);
  const json body = events_response(c, "scores", {finding(core::FindingKind::drift)}, {},
                                    kT0 - 60 * kMin, std::chrono::minutes(30));
  const ExplainReport r = parse_explain_report(json::parse(body.dump()));
  ASSERT_EQ(r.findings.size(), 1u);
  ASSERT_FALSE(r.findings[0].related.empty());
  EXPECT_EQ(r.findings[0].related[0].event.kind, EventKind::file_change);
  EXPECT_EQ(r.findings[0].related[0].event.path, "/srv/models/model.onnx");
  const std::string text = format_explain(r);
  EXPECT_NE(text.find("Stream scores: 1 producer process (pid 1000)"), std::string::npos) << text;
  EXPECT_NE(text.find("#7 [critical] drift (psi), opened 2023-11-14 22:13:20.000Z (open)"), std::string::npos) << text;
  EXPECT_NE(text.find("Possible causes, before the onset, most plausible first:\n       1. "), std::string::npos) << text;
  const auto first = text.find("       1. ");
  EXPECT_NE(text.find("model file /srv/models/model.onnx replaced", first), std::string::npos);
  EXPECT_LT(text.find("model file /srv/models/model.onnx replaced", first), text.find("       2. "));
  EXPECT_NE(text.find("host, 2m00s before the onset"), std::string::npos) << text;
  EXPECT_NE(text.find("Timeline since"), std::string::npos);
  EXPECT_NE(text.find("exit               [child]    sh (pid 1001) exited with code 3"), std::string::npos) << text;
}

// The cascade as `mltap explain` prints it: the deployment is the first candidate cause, the OOM
// kill and the SIGKILL exit a few seconds after the opening are listed after the onset.
TEST(Explain, CausesBeforeTheOnsetConsequencesListedAfterIt) {
  Correlator c;
  const ProcessRef p = proc(1000, 5000);
  c.note_producer("scores", "inference", {p.pid, p.start_ticks});
  SystemEvent swap = host(EventKind::file_change, kT0 - 40 * kSec, proc(4242, 9000, "cp"));
  swap.file_op = FileOp::written;
  swap.path = "/var/lib/models/model.bin";
  c.add_event(swap);
  SystemEvent oom = tracked(EventKind::oom_kill, kT0 + 11 * kSec, p, p);
  oom.other = p;
  c.add_event(oom);
  SystemEvent killed = tracked(EventKind::exit, kT0 + 11 * kSec + 5'000'000, p, p);
  killed.signal = 9;
  c.add_event(killed);
  core::Finding f = finding(core::FindingKind::prediction_drift);
  f.onset_unix_ns = kT0 - 38 * kSec;
  f.onset_basis = "cusum";
  const json body = events_response(c, "scores", {f}, {}, kT0 - 60 * kMin, std::chrono::minutes(30));
  EXPECT_EQ(body["findings"][0]["onset_unix_ns"].get<std::uint64_t>(), kT0 - 38 * kSec);
  EXPECT_EQ(body["findings"][0]["onset_basis"], "cusum");
  const ExplainReport r = parse_explain_report(json::parse(body.dump()));
  ASSERT_EQ(r.findings.size(), 1u);
  ASSERT_EQ(r.findings[0].related.size(), 3u);
  EXPECT_EQ(r.findings[0].onset_unix_ns, kT0 - 38 * kSec);
  EXPECT_FALSE(r.findings[0].related[0].after_onset);
  EXPECT_TRUE(r.findings[0].related[1].after_onset);
  const std::string text = format_explain(r);
  EXPECT_NE(text.find("Onset: about 22:12:42.000Z (cusum), 38 s before it opened"), std::string::npos) << text;
  {
    json with_resolution = json::parse(body.dump());
    with_resolution["findings"][0]["onset_resolution_ns"] = 1'500'000'000ULL;
    const std::string t = format_explain(parse_explain_report(with_resolution));
    EXPECT_NE(t.find("Onset: about 22:12:42.000Z (cusum, up to 1 s later), 38 s before it opened"), std::string::npos) << t;
  }
  const auto causes = text.find("Possible causes, before the onset, most plausible first:\n       1. ");
  const auto after = text.find("After the onset (consequences or coincidences, oldest first):\n       - ");
  const auto deploy = text.find("model file /var/lib/models/model.bin written by cp (pid 4242)");
  const auto kill = text.find("OOM killer killed python3 (pid 1000)");
  const auto exit = text.find("python3 (pid 1000) was killed by SIGKILL");
  ASSERT_NE(causes, std::string::npos) << text;
  ASSERT_NE(after, std::string::npos) << text;
  EXPECT_LT(causes, deploy);
  EXPECT_LT(deploy, after);
  EXPECT_LT(after, kill);
  EXPECT_LT(kill, exit);
  EXPECT_NE(text.find("producer, 49 s after the onset (11 s after it opened)"), std::string::npos) << text;
  // Hostile: an onset after the opening is refused with the field named.
  json bad = json::parse(body.dump());
  bad["findings"][0]["onset_unix_ns"] = kT0 + kSec;
  EXPECT_THROW(parse_explain_report(bad), std::invalid_argument);
  bad["findings"][0]["onset_unix_ns"] = "soon";
  EXPECT_THROW(parse_explain_report(bad), std::invalid_argument);
  // An older agent (no onset, no after_onset): the opening is the onset.
  json old = json::parse(body.dump());
  old["findings"][0].erase("onset_unix_ns");
  for (auto& re : old["findings"][0]["related"]) re.erase("after_onset");
  const ExplainReport ro = parse_explain_report(old);
  EXPECT_EQ(ro.findings[0].onset_unix_ns, kT0);
  EXPECT_FALSE(ro.findings[0].related[0].after_onset);
  EXPECT_TRUE(ro.findings[0].related[2].after_onset);
}

TEST(Explain, EmptyAndMalformedResponses) {
  Correlator c;
  const json body = events_response(c, "idle", {}, {}, kT0, std::chrono::minutes(30));
  const std::string text = format_explain(parse_explain_report(body));
  EXPECT_NE(text.find("no producer processes known"), std::string::npos);
  EXPECT_NE(text.find("Findings: none"), std::string::npos);
  EXPECT_NE(text.find("(no system events)"), std::string::npos);
  for (const char* bad : {R"({})", R"({"stream": 1})", R"([])",
                          R"({"stream":"s","since_unix_ns":1,"window_seconds":1,"producers":[{}],"events":[],"findings":[]})",
                          R"({"stream":"s","since_unix_ns":1,"window_seconds":1,"producers":[],"events":[{"kind":"exec"}],"findings":[]})",
                          R"({"stream":"s","since_unix_ns":1,"window_seconds":1,"producers":[],"events":[],"findings":[{"id":1}]})"}) {
    EXPECT_THROW(parse_explain_report(json::parse(bad)), std::invalid_argument) << bad;
  }
}

}  // namespace
}  // namespace mltap::correlator::test
