// Direct push of findings against a real prometheus-alertmanager on loopback: the alert appears
// with its labels and annotations, is re-posted while open, resolves when the finding closes or
// vanishes, and pushes are retried until Alertmanager is reachable.
#include <signal.h>

#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include "core/config_reader.hpp"
#include "core/time.hpp"
#include "agent/api/http_client.hpp"
#include "exporters/alertmanager/alertmanager_pusher.hpp"
#include "exporters/metrics/alertmanager_metrics.hpp"
#include "exporters/webhook/webhook_payload.hpp"
#include "support/alertmanager_process.hpp"
#include "support/test_util.hpp"

namespace mltap::alertmanager {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

const std::string kNullReceiver = "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n";

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

class Findings {
 public:
  void set(std::vector<PushableFinding> v) {
    std::lock_guard l(mu_);
    findings_ = std::move(v);
  }
  FindingsProvider provider() {
    return [this] {
      std::lock_guard l(mu_);
      return findings_;
    };
  }

 private:
  std::mutex mu_;
  std::vector<PushableFinding> findings_;
};

PushableFinding drift_finding(std::uint64_t id, core::Severity severity = core::Severity::critical) {
  PushableFinding p;
  auto& f = p.finding;
  f.id = id;
  f.stream = "fraud";
  f.component = "scorer";
  f.kind = core::FindingKind::drift;
  f.reason = "psi";
  f.severity = severity;
  f.opened_unix_ns = now_ns() - 10'000'000'000ull;
  f.updated_unix_ns = f.opened_unix_ns;
  f.summary = "Stream fraud drifted (psi 0.31 on amount)";
  f.top = {{"amount", "psi", 0.31, 0.2, NAN, "mean 3.1 -> 4.0"}, {"age", "wasserstein", 0.12, 0.1, NAN, ""}};
  f.window_records = 5000;
  f.onset_unix_ns = f.opened_unix_ns - 30'000'000'000ull;
  f.onset_basis = "cusum";
  p.related_events = {"exec of /usr/bin/python3 by pid 1234, 3 s before", "oom_kill of pid 99 (trainer), 10 s before"};
  p.after_onset_events = {"OOM killer killed python3 (pid 77); 41 s after the onset"};
  return p;
}

AlertmanagerConfig push_config(const std::string& url) {
  AlertmanagerConfig c;
  c.enabled = true;
  c.url = url;
  c.interval = 2s;
  c.poll_interval = 100ms;
  c.timeout = 1s;
  c.external_url = "http://127.0.0.1:9645";
  c.labels = {{"job", "mltapd"}, {"instance", "host-a:9645"}};
  return c;
}

json find_alert(const json& alerts, const std::string& alertname, const std::string& severity = "") {
  if (!alerts.is_array()) return nullptr;
  for (const auto& a : alerts) {
    if (a["labels"].value("alertname", "") == alertname && (severity.empty() || a["labels"].value("severity", "") == severity)) {
      return a;
    }
  }
  return nullptr;
}

TEST(AlertmanagerPush, FindingAppearsIsRefreshedAndResolves) {
  mltap::testing::AlertmanagerProcess am(kNullReceiver);
  ASSERT_TRUE(am.running()) << am.log();
  Findings findings;
  AlertmanagerPusher pusher(push_config(am.url()), findings.provider(), api::http_post);
  pusher.start();

  PushableFinding drift = drift_finding(42);
  PushableFinding info = drift_finding(43, core::Severity::info);  // below min_severity
  info.finding.kind = core::FindingKind::throughput;
  const auto t0 = std::chrono::steady_clock::now();
  findings.set({drift, info});
  pusher.notify();
  json alert;
  ASSERT_TRUE(mltap::testing::wait_until([&] { return !(alert = find_alert(am.alerts(), "MltapStreamDrift")).is_null(); }, 10s))
      << am.log();
  const double appear_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("direct push: finding visible in Alertmanager after %.0f ms\n", appear_ms);
  EXPECT_LT(appear_ms, 5000.0);  // "within seconds"

  EXPECT_EQ(alert["labels"], json({{"alertname", "MltapStreamDrift"}, {"stream", "fraud"}, {"component", "scorer"},
                                   {"kind", "drift"}, {"severity", "critical"}, {"finding_id", "42"},
                                   {"job", "mltapd"}, {"instance", "host-a:9645"}}));
  const json& ann = alert["annotations"];
  EXPECT_EQ(ann["summary"], "Stream fraud drifted (psi 0.31 on amount)");
  EXPECT_EQ(ann["finding_url"], "http://127.0.0.1:9645/api/v1/findings/42");
  EXPECT_EQ(ann["top_features"], "amount,age");
  EXPECT_NE(ann["description"].get<std::string>().find("amount (psi 0.31 > 0.2, mean 3.1 -> 4.0); age (wasserstein 0.12 > 0.1)"),
            std::string::npos) << ann["description"];
  EXPECT_NE(ann["description"].get<std::string>().find("component scorer"), std::string::npos);
  EXPECT_NE(ann["related_events"].get<std::string>().find("exec of /usr/bin/python3"), std::string::npos);
  // Candidate causes and what followed the onset are apart; the onset itself is an annotation.
  EXPECT_EQ(ann["after_onset_events"], "OOM killer killed python3 (pid 77); 41 s after the onset");
  EXPECT_EQ(ann["onset"], core::format_utc(drift.finding.onset_unix_ns));
  EXPECT_NE(ann["description"].get<std::string>().find("(onset about " + core::format_utc(drift.finding.onset_unix_ns) + ", cusum)"),
            std::string::npos) << ann["description"];
  EXPECT_FALSE(ann.contains("supersedes_finding_id"));
  EXPECT_EQ(alert["generatorURL"], "http://127.0.0.1:9645/api/v1/findings/42");
  EXPECT_EQ(webhook::parse_rfc3339_ns(alert["startsAt"].get<std::string>()),
            static_cast<std::int64_t>(drift.finding.opened_unix_ns / 1'000'000 * 1'000'000));
  const auto ends = webhook::parse_rfc3339_ns(alert["endsAt"].get<std::string>());
  ASSERT_TRUE(ends);
  EXPECT_GT(*ends, static_cast<std::int64_t>(now_ns() + 5'000'000'000ull));  // now + 4 * interval
  EXPECT_TRUE(find_alert(am.alerts(), "MltapStreamThroughputChange").is_null()) << "info findings are not pushed";

  // Re-posted while open: Alertmanager's updatedAt moves on.
  const std::string updated = alert["updatedAt"];
  ASSERT_TRUE(mltap::testing::wait_until(
      [&] {
        const json a = find_alert(am.alerts(), "MltapStreamDrift");
        return !a.is_null() && a["updatedAt"] != updated;
      },
      8s));
  EXPECT_TRUE(mltap::testing::wait_until([&] { return pusher.counts().ok >= 2; }, 5s));  // counted once the answer is read

  // Closed: resolved in Alertmanager (no longer listed as active).
  drift.finding.closed_unix_ns = now_ns();
  const auto t1 = std::chrono::steady_clock::now();
  findings.set({drift, info});
  pusher.notify();
  ASSERT_TRUE(mltap::testing::wait_until([&] { return find_alert(am.alerts(), "MltapStreamDrift").is_null(); }, 10s));
  std::printf("direct push: closed finding resolved in Alertmanager after %.0f ms\n",
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count());
  EXPECT_TRUE(mltap::testing::wait_until([&] { return pusher.tracked() == 0; }, 5s));  // updated after the post returns
  EXPECT_EQ(pusher.counts().failed, 0u);
  EXPECT_EQ(pusher.counts().rejected, 0u);

  metrics::AlertmanagerPushCollector collector([&pusher] { return pusher.counts(); });
  const std::string text = prometheus::TextSerializer().Serialize(collector.Collect());
  EXPECT_NE(text.find("mltap_alertmanager_pushes_total{result=\"failed\"} 0"), std::string::npos) << text;
}

TEST(AlertmanagerPush, VanishedFindingAndSeverityChangeAreResolved) {
  mltap::testing::AlertmanagerProcess am(kNullReceiver);
  ASSERT_TRUE(am.running()) << am.log();
  Findings findings;
  AlertmanagerPusher pusher(push_config(am.url()), findings.provider(), api::http_post);
  pusher.start();
  PushableFinding f = drift_finding(7, core::Severity::warning);
  findings.set({f});
  ASSERT_TRUE(mltap::testing::wait_until([&] { return !find_alert(am.alerts(), "MltapStreamDrift", "warning").is_null(); }, 10s));
  // Severity rises: a new label set; the warning alert must not linger until its endsAt.
  f.finding.severity = core::Severity::critical;
  findings.set({f});
  ASSERT_TRUE(mltap::testing::wait_until(
      [&] {
        const json all = am.alerts();
        return !find_alert(all, "MltapStreamDrift", "critical").is_null() &&
               find_alert(all, "MltapStreamDrift", "warning").is_null();
      },
      10s));
  // The provider forgets the finding (e.g. the stream was removed): resolved now.
  findings.set({});
  ASSERT_TRUE(mltap::testing::wait_until([&] { return find_alert(am.alerts(), "MltapStreamDrift").is_null(); }, 10s));
  EXPECT_TRUE(mltap::testing::wait_until([&] { return pusher.tracked() == 0; }, 5s));  // updated after the post returns
}

// A material change closes finding 7 and opens finding 8 (same stream, kind and severity): for
// Alertmanager that is a new alert (finding_id label), and 7 is resolved, not updated.
TEST(AlertmanagerPush, SupersedingFindingIsANewAlert) {
  mltap::testing::AlertmanagerProcess am(kNullReceiver);
  ASSERT_TRUE(am.running()) << am.log();
  Findings findings;
  AlertmanagerPusher pusher(push_config(am.url()), findings.provider(), api::http_post);
  pusher.start();
  PushableFinding a = drift_finding(7);
  findings.set({a});
  json first;
  ASSERT_TRUE(mltap::testing::wait_until([&] { return !(first = find_alert(am.alerts(), "MltapStreamDrift")).is_null(); }, 10s));
  EXPECT_EQ(first["labels"]["finding_id"], "7");
  a.finding.closed_unix_ns = now_ns();
  PushableFinding b = drift_finding(8);
  b.finding.supersedes = 7;
  b.finding.opened_unix_ns = a.finding.closed_unix_ns;
  b.finding.top.push_back({"country", "psi", 0.9, 0.2, NAN, "unit bug"});
  findings.set({a, b});
  json second;
  ASSERT_TRUE(mltap::testing::wait_until(
      [&] {
        const json all = am.alerts();
        std::size_t n = 0;
        for (const auto& x : all) {
          if (x["labels"].value("alertname", "") != "MltapStreamDrift") continue;
          ++n;
          second = x;
        }
        return n == 1 && second["labels"]["finding_id"] == "8";
      },
      10s))
      << am.alerts().dump(1);
  EXPECT_NE(second["fingerprint"], first["fingerprint"]) << "a new alert, not the old one updated";
  EXPECT_EQ(second["annotations"]["supersedes_finding_id"], "7");
  EXPECT_NE(second["annotations"]["description"].get<std::string>().find("superseding finding 7"), std::string::npos);
  EXPECT_EQ(webhook::parse_rfc3339_ns(second["startsAt"].get<std::string>()),
            static_cast<std::int64_t>(b.finding.opened_unix_ns / 1'000'000 * 1'000'000));
}

TEST(AlertmanagerPush, RetriesUntilAlertmanagerAnswers) {
  // Hold the port (bound, not listening: connections are refused) so that no Alertmanager of a
  // test running in parallel can take it before ours does.
  const int holder = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(holder, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::getsockname(holder, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  Findings findings;
  AlertmanagerPusher pusher(push_config("http://127.0.0.1:" + std::to_string(port)), findings.provider(),
                            api::http_post);
  findings.set({drift_finding(9)});
  pusher.start();
  ASSERT_TRUE(mltap::testing::wait_until([&] { return pusher.counts().failed >= 2; }, 10s));
  ::close(holder);
  mltap::testing::AlertmanagerProcess am(kNullReceiver, port);
  ASSERT_TRUE(am.running()) << am.log();
  ASSERT_TRUE(mltap::testing::wait_until([&] { return !find_alert(am.alerts(), "MltapStreamDrift").is_null(); }, 10s));
  EXPECT_TRUE(mltap::testing::wait_until([&] { return pusher.counts().ok >= 1; }, 5s));  // counted once the answer is read
}

TEST(AlertmanagerConfigSection, ParsesAndRefuses) {
  auto parse = [](const std::string& yaml) {
    auto root = core::load_text(yaml, "c.yaml");
    return parse_alertmanager_config(core::ConfigSection(root, "c.yaml", "").child("alertmanager"));
  };
  const auto c = parse("alertmanager:\n  url: http://am:9093/prefix\n  interval: 30s\n  labels: ['job=mltapd']\n");
  EXPECT_TRUE(c.enabled);
  EXPECT_EQ(c.interval, 30s);
  EXPECT_EQ(c.labels.size(), 1u);
  EXPECT_FALSE(parse("alertmanager:\n  url: http://am:9093\n  enabled: false\n").enabled);
  EXPECT_FALSE(parse("agent: {}\n").enabled);
  for (const char* bad : {"alertmanager:\n  url: ftp://am\n", "alertmanager:\n  enabled: true\n",
                          "alertmanager:\n  url: http://am:9093\n  labels: ['stream=x']\n",
                          "alertmanager:\n  url: http://am:9093\n  interval: 1s\n  timeout: 10s\n",
                          "alertmanager:\n  url: http://am:9093\n  urls: x\n"}) {
    EXPECT_THROW(parse(bad), core::ConfigError) << bad;
  }
  EXPECT_EQ(alert_name_for(core::FindingKind::schema_change), "MltapStreamSchemaChanged");
}

}  // namespace
}  // namespace mltap::alertmanager
