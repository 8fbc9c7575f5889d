// The webhook receiver on mltapd's real HTTP server (cpp-httplib clients): auth, limits, strict payload validation,
// status codes, idempotency, queue-full behaviour and a 10,000-alert burst.
#include <time.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <limits>

#include <gtest/gtest.h>
#include <httplib.h>
#include <prometheus/text_serializer.h>

#include "agent/reactions/reaction_engine.hpp"
#include "core/config_reader.hpp"
#include "exporters/metrics/reaction_metrics.hpp"
#include "exporters/webhook/webhook_receiver.hpp"
#include "support/recording_control_plane.hpp"
#include "support/test_util.hpp"
#include "support/webhook_server.hpp"

namespace mltap::webhook {
namespace {

using namespace std::chrono_literals;
using mltap::reactions::testing::RecordingControlPlane;
using nlohmann::json;

const std::string kToken = "s3cret-token-0123456789abcdef";

json make_alert(const std::string& fingerprint, const std::string& status, json labels,
                const std::string& starts_at = "2024-05-01T12:00:00.123456789Z") {
  return {{"status", status},
          {"labels", std::move(labels)},
          {"annotations", {{"summary", "drift"}, {"description", "Top features: a,b."}}},
          {"startsAt", starts_at},
          {"endsAt", status == "resolved" ? "2024-05-01T12:30:00Z" : "0001-01-01T00:00:00Z"},
          {"generatorURL", "http://prometheus:9090/graph?g0.expr=x"},
          {"fingerprint", fingerprint}};
}

json make_payload(std::vector<json> alerts, const std::string& status = "firing") {
  return {{"version", "4"},
          {"groupKey", "{}/{alertname=~\"Mltap.*\"}:{alertname=\"MltapStreamDrift\"}"},
          {"truncatedAlerts", 0},
          {"status", status},
          {"receiver", "mltapd-reactions"},
          {"groupLabels", {{"alertname", "MltapStreamDrift"}}},
          {"commonLabels", {{"alertname", "MltapStreamDrift"}}},
          {"commonAnnotations", json::object()},
          {"externalURL", "http://alertmanager:9093"},
          {"alerts", std::move(alerts)}};
}

json drift_labels(const std::string& stream = "fraud") {
  return {{"alertname", "MltapStreamDrift"}, {"stream", stream}, {"severity", "critical"}};
}

struct Reply {
  int status = 0;
  std::string body;
  httplib::Headers headers;
};

class WebhookTest : public ::testing::Test {
 protected:
  void start(std::uint32_t queue_capacity = 1024, bool start_engine = true, std::size_t max_alerts = 1000) {
    const std::string yaml = "reactions:\n  audit_log: " + dir_.file("audit.jsonl") +
                             "\n  queue_capacity: " + std::to_string(queue_capacity) + R"(
  actions:
    fallback:
      type: producer-flag
      matchers: ['alertname = "MltapStreamDrift"']
      flag: use_fallback
      cooldown: 0s
    burst:
      type: producer-flag
      matchers: ['alertname = "Burst"']
      flag: burst
      cooldown: 0s
      rate_limit: {max: 20, per: 1h}
)";
    auto root = core::load_text(yaml, "test.yaml");
    engine_ = std::make_unique<reactions::ReactionEngine>(
        reactions::parse_reactions_config(core::ConfigSection(root, "test.yaml", "").child("reactions")), control_);
    if (start_engine) engine_->start();
    WebhookConfig cfg;
    cfg.enabled = true;
    cfg.max_body_bytes = 256 * 1024;
    cfg.limits.max_alerts = max_alerts;
    receiver_ = std::make_unique<WebhookReceiver>(cfg, kToken, *engine_);
    server_ = std::make_unique<mltap::testing::WebhookServer>(*receiver_);
  }

  Reply post(const std::string& body, const std::string& auth = "Bearer " + kToken,
             const std::string& content_type = "application/json") {
    httplib::Client c("127.0.0.1", server_->port());
    httplib::Headers h;
    if (!auth.empty()) h.emplace("Authorization", auth);
    auto r = c.Post(kWebhookPath, h, body, content_type.c_str());
    if (!r) return {};
    return {r->status, r->body, r->headers};
  }
  Reply post(const json& payload) { return post(payload.dump()); }
  std::vector<json> audit() const { return mltap::testing::read_json_lines(dir_.file("audit.jsonl")); }
  bool idle() { return engine_->wait_idle(20s); }

  mltap::testing::TempDir dir_;
  RecordingControlPlane control_;
  std::unique_ptr<reactions::ReactionEngine> engine_;
  std::unique_ptr<WebhookReceiver> receiver_;
  std::unique_ptr<mltap::testing::WebhookServer> server_;
};

TEST_F(WebhookTest, AuthenticatesWithTheBearerToken) {
  start();
  const std::string body = make_payload({make_alert("a1", "firing", drift_labels())}).dump();
  Reply r = post(body, "");
  EXPECT_EQ(r.status, 401);
  bool has_challenge = false;
  for (const auto& [k, v] : r.headers) has_challenge |= (k == "WWW-Authenticate" && v.find("Bearer") == 0);
  EXPECT_TRUE(has_challenge);
  EXPECT_EQ(post(body, "Basic dXNlcjpwYXNz").status, 401);
  EXPECT_EQ(post(body, "Bearer").status, 401);
  EXPECT_EQ(post(body, "Bearer wrong-token-0123456789abcdef").status, 403);
  EXPECT_EQ(post(body, "Bearer " + kToken + "x").status, 403);
  EXPECT_EQ(post(body, "Bearer " + kToken.substr(0, kToken.size() - 1)).status, 403);
  ASSERT_TRUE(idle());
  EXPECT_TRUE(control_.flag_calls().empty()) << "nothing may run for a refused request";
  r = post(body, "bearer " + kToken);  // the scheme is case-insensitive
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["accepted"], 1);
  ASSERT_TRUE(idle());
  EXPECT_EQ(control_.flag("fraud", "use_fallback"), 1u);
  const auto codes = receiver_->requests_by_code();
  auto n = [&](int code) {
    for (const auto& [c, v] : codes) if (c == code) return v;
    return std::uint64_t{0};
  };
  EXPECT_EQ(n(401), 3u);
  EXPECT_EQ(n(403), 3u);
  EXPECT_EQ(n(200), 1u);
}

TEST_F(WebhookTest, RefusesBadPayloadsWithoutRetry) {
  start(1024, true, 50);
  struct Case {
    std::string name, body;
    int status;
    std::string message;
  };
  json no_fingerprint = make_alert("a1", "firing", drift_labels());
  no_fingerprint.erase("fingerprint");
  json number_label = make_alert("a1", "firing", {{"alertname", 5}});
  json bad_time = make_alert("a1", "firing", drift_labels(), "2024-02-30T00:00:00Z");
  json bad_status = make_alert("a1", "pending", drift_labels());
  json bad_name = make_alert("a1", "firing", {{"bad-name", "x"}});
  json long_value = make_alert("a1", "firing", {{"alertname", std::string(2000, 'v')}});
  json not_hex = make_alert("zz-not-hex", "firing", drift_labels());
  std::vector<json> many;
  for (int i = 0; i < 51; ++i) many.push_back(make_alert("b" + std::to_string(i), "firing", drift_labels()));
  json v3 = make_payload({});
  v3["version"] = "3";
  json top_status = make_payload({});
  top_status["status"] = "unknown";
  json truncated = make_payload({});
  truncated["truncatedAlerts"] = -1;
  std::string deep(40, '[');
  deep += std::string(40, ']');
  const std::vector<Case> cases = {
      {"not json", "{\"version\": \"4\",", 400, "malformed JSON"},
      {"deep", deep, 400, "nested deeper"},
      {"array", "[]", 422, "must be a JSON object"},
      {"version", v3.dump(), 422, "not supported"},
      {"top status", top_status.dump(), 422, "neither firing nor resolved"},
      {"truncated", truncated.dump(), 422, "truncatedAlerts"},
      {"no fingerprint", make_payload({no_fingerprint}).dump(), 422, "alerts[0].fingerprint: missing"},
      {"number label", make_payload({number_label}).dump(), 422, "alerts[0].labels.alertname: must be a string"},
      {"bad time", make_payload({bad_time}).dump(), 422, "alerts[0].startsAt"},
      {"alert status", make_payload({bad_status}).dump(), 422, "'pending' is neither"},
      {"label name", make_payload({bad_name}).dump(), 422, "not a label name"},
      {"long value", make_payload({long_value}).dump(), 422, "longer than 1024 bytes"},
      {"fingerprint", make_payload({not_hex}).dump(), 422, "hex digits"},
      {"too many", make_payload(many).dump(), 422, "at most 50 per request"},
      {"bad utf-8", "{\"version\": \"4\", \"groupKey\": \"\xff\xfe\"}", 400, "malformed JSON"},
  };
  for (const auto& c : cases) {
    const Reply r = post(c.body);
    EXPECT_EQ(r.status, c.status) << c.name << ": " << r.body;
    EXPECT_NE(r.body.find(c.message), std::string::npos) << c.name << ": " << r.body;
    EXPECT_TRUE(json::accept(r.body)) << c.name;
  }
  EXPECT_EQ(post(make_payload({make_alert("a1", "firing", drift_labels())}).dump(), "Bearer " + kToken, "text/plain").status, 415);
  ASSERT_TRUE(idle());
  EXPECT_TRUE(control_.flag_calls().empty());
  EXPECT_EQ(engine_->queue_depth(), 0u);
}

TEST_F(WebhookTest, RefusesOversizedBodies) {
  start();
  std::vector<json> alerts;
  for (int i = 0; i < 900; ++i) alerts.push_back(make_alert("c" + std::to_string(i), "firing", drift_labels()));
  const std::string big = make_payload(alerts).dump();
  ASSERT_GT(big.size(), 256u * 1024);
  Reply r = post(big);
  EXPECT_EQ(r.status, 413) << r.body.substr(0, 200);
  // Without a Content-Length (chunked), the limit is enforced while reading: a 64 MiB stream is
  // cut off long before its end (socket buffers hold a few MiB at most).
  httplib::Client c("127.0.0.1", server_->port());
  httplib::Headers h = {{"Authorization", "Bearer " + kToken}};
  constexpr std::size_t kStream = 64u << 20;
  const std::string chunk(65536, 'x');
  std::size_t sent = 0;
  auto res = c.Post(
      kWebhookPath, h,
      [&](std::size_t, httplib::DataSink& sink) {
        if (sent >= kStream) {
          sink.done();
          return true;
        }
        if (!sink.write(chunk.data(), chunk.size())) return false;
        sent += chunk.size();
        return true;
      },
      "application/json");
  // The server answers 413 and closes the connection while the client is still sending, so the
  // client may see either the 413 or a broken connection; the server's count is authoritative.
  if (res) {
    EXPECT_EQ(res->status, 413);
  }
  std::uint64_t refused = 0;
  for (const auto& [code, n] : receiver_->requests_by_code()) if (code == 413) refused = n;
  EXPECT_EQ(refused, 2u);
  EXPECT_LT(sent, kStream) << "the server must stop reading at the limit";
  // The server still answers afterwards.
  EXPECT_EQ(post(make_payload({make_alert("d1", "firing", drift_labels())})).status, 200);
  ASSERT_TRUE(idle());
  EXPECT_EQ(control_.flag_calls().size(), 1u);
}

// The declared length is a decimal number or the request is malformed (400): "-1" is not a huge
// body (413), "12abc" is not 12.
TEST(WebhookContentLength, IsParsedStrictly) {
  EXPECT_EQ(parse_content_length("12"), 12u);
  EXPECT_EQ(parse_content_length(" 0 "), 0u);
  EXPECT_EQ(parse_content_length("99999999999999999999999"), std::numeric_limits<std::uint64_t>::max());
  for (const char* bad : {"", " ", "-1", "+5", "12abc", "0x10", "1 2", "1.0", "\t"}) {
    EXPECT_FALSE(parse_content_length(bad).has_value()) << "'" << bad << "'";
  }
}

TEST_F(WebhookTest, RefusesAMalformedContentLengthAs400) {
  start();
  const std::string auth = "Bearer " + kToken;
  for (const char* bad : {"-1", "12abc", "", "+12"}) {
    const auto r = receiver_->check_request(auth, "application/json", std::string_view(bad));
    ASSERT_TRUE(r) << bad;
    EXPECT_EQ(r->status, 400) << bad;
  }
  const auto big = receiver_->check_request(auth, "application/json", std::string_view("99999999999999999999"));
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  EXPECT_FALSE(receiver_->check_request(auth, "application/json", std::string_view("12")));
  EXPECT_FALSE(receiver_->check_request(auth, "application/json", std::nullopt));  // chunked
}

TEST_F(WebhookTest, RefusesUnknownReactionAndAuditsIt) {
  start();
  json labels = drift_labels();
  labels["mltap_reaction"] = "fallback,restart-the-world";
  const Reply r = post(make_payload({make_alert("e1", "firing", drift_labels("other")), make_alert("e2", "firing", labels)}));
  EXPECT_EQ(r.status, 422);
  EXPECT_NE(r.body.find("restart-the-world"), std::string::npos) << r.body;
  ASSERT_TRUE(idle());
  EXPECT_TRUE(control_.flag_calls().empty()) << "no alert of a refused request runs";
  const auto lines = audit();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["result"], "unknown_reaction");
  EXPECT_EQ(lines[0]["alert"]["fingerprint"], "e2");
  // Naming a configured reaction works.
  labels["mltap_reaction"] = "fallback";
  EXPECT_EQ(post(make_payload({make_alert("e2", "firing", labels)})).status, 200);
  ASSERT_TRUE(idle());
  EXPECT_EQ(control_.flag("fraud", "use_fallback"), 1u);
}

TEST_F(WebhookTest, RetriedNotificationsRunOnce) {
  start();
  const json firing = make_payload({make_alert("f1", "firing", drift_labels())});
  Reply r1 = post(firing), r2 = post(firing);
  EXPECT_EQ(r1.status, 200);
  EXPECT_EQ(r2.status, 200);
  EXPECT_EQ(json::parse(r1.body)["accepted"], 1);
  EXPECT_EQ(json::parse(r2.body)["duplicates"], 1);
  // The same start time written differently is the same notification.
  const Reply r3 = post(make_payload({make_alert("f1", "firing", drift_labels(), "2024-05-01T14:00:00.123456789+02:00")}));
  EXPECT_EQ(json::parse(r3.body)["duplicates"], 1);
  const json resolved = make_payload({make_alert("f1", "resolved", drift_labels())}, "resolved");
  EXPECT_EQ(post(resolved).status, 200);
  EXPECT_EQ(json::parse(post(resolved).body)["duplicates"], 1);
  ASSERT_TRUE(idle());
  const auto calls = control_.flag_calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].value, 1u);
  EXPECT_EQ(calls[1].value, 0u);
  // A new firing (new startsAt) of the same alert is a new notification.
  EXPECT_EQ(json::parse(post(make_payload({make_alert("f1", "firing", drift_labels(), "2024-05-02T00:00:00Z")})).body)["accepted"], 1);
  ASSERT_TRUE(idle());
  EXPECT_EQ(control_.flag_calls().size(), 3u);
}

// A finding superseded by a new one (issue 12): Alertmanager resolves the old alert and fires the
// new one in one notification, the resolved one listed first. The flag stays set: the new alert
// joins the reaction before the old one releases it (no undo, no cooldown gap).
TEST_F(WebhookTest, SupersedingAlertTakesOverAReactionInTheSameNotification) {
  start();
  json old_labels = drift_labels();
  old_labels["finding_id"] = "7";
  ASSERT_EQ(post(make_payload({make_alert("f7", "firing", old_labels)})).status, 200);
  ASSERT_TRUE(idle());
  json new_labels = drift_labels();
  new_labels["finding_id"] = "8";
  ASSERT_EQ(post(make_payload({make_alert("f7", "resolved", old_labels), make_alert("f8", "firing", new_labels)})).status, 200);
  ASSERT_TRUE(idle());
  const auto calls = control_.flag_calls();
  ASSERT_EQ(calls.size(), 1u) << "set once, never cleared in between";
  EXPECT_EQ(calls[0].value, 1u);
  ASSERT_EQ(post(make_payload({make_alert("f8", "resolved", new_labels)}, "resolved")).status, 200);
  ASSERT_TRUE(idle());
  ASSERT_EQ(control_.flag_calls().size(), 2u);
  EXPECT_EQ(control_.flag_calls()[1].value, 0u);
}

TEST_F(WebhookTest, FullQueueIsATransientError) {
  start(2, /*start_engine=*/false);
  std::vector<json> alerts;
  for (int i = 0; i < 3; ++i) alerts.push_back(make_alert("fa" + std::to_string(i), "firing", drift_labels("s" + std::to_string(i))));
  const json payload = make_payload(alerts);
  const Reply r = post(payload);
  EXPECT_EQ(r.status, 503) << r.body;
  bool retry_after = false;
  for (const auto& [k, v] : r.headers) retry_after |= (k == "Retry-After");
  EXPECT_TRUE(retry_after);
  engine_->start();
  ASSERT_TRUE(idle());
  // Alertmanager retries the whole payload: the two queued alerts are duplicates, the third runs.
  const Reply retry = post(payload);
  EXPECT_EQ(retry.status, 200) << retry.body;
  EXPECT_EQ(json::parse(retry.body)["accepted"], 1);
  EXPECT_EQ(json::parse(retry.body)["duplicates"], 2);
  ASSERT_TRUE(idle());
  EXPECT_EQ(control_.flag_calls().size(), 3u);
}

TEST_F(WebhookTest, BurstOfTenThousandAlertsIsRateLimitedAndServerStaysResponsive) {
  start();
  constexpr int kRequests = 100, kPerRequest = 100, kClients = 4;
  std::atomic<int> next{0};
  std::atomic<int> responses_503{0}, other_errors{0};
  std::atomic<bool> done{false};
  std::vector<double> health_ms;
  std::thread health([&] {
    httplib::Client c("127.0.0.1", server_->port());
    while (!done) {
      const auto t0 = std::chrono::steady_clock::now();
      auto r = c.Get("/healthz");
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (r && r->status == 200) health_ms.push_back(ms);
      std::this_thread::sleep_for(5ms);
    }
  });
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  for (int t = 0; t < kClients; ++t) {
    clients.emplace_back([&] {
      httplib::Client c("127.0.0.1", server_->port());
      httplib::Headers h = {{"Authorization", "Bearer " + kToken}};
      for (int i = next++; i < kRequests; i = next++) {
        std::vector<json> alerts;
        for (int k = 0; k < kPerRequest; ++k) {
          const std::string id = std::to_string(i * kPerRequest + k);
          alerts.push_back(make_alert("ab" + id, "firing", {{"alertname", "Burst"}, {"stream", "s" + id}}));
        }
        const std::string body = make_payload(alerts).dump();
        // Like Alertmanager: retry 5xx with a short backoff.
        for (int attempt = 0; attempt < 200; ++attempt) {
          auto r = c.Post(kWebhookPath, h, body, "application/json");
          if (r && r->status == 200) break;
          if (r && r->status == 503) {
            ++responses_503;
            std::this_thread::sleep_for(20ms);
            continue;
          }
          ++other_errors;
          break;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  ASSERT_TRUE(idle());
  const double burst_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  done = true;
  health.join();

  EXPECT_EQ(other_errors.load(), 0);
  EXPECT_EQ(receiver_->alerts_accepted(), 10000u);  // each alert taken exactly once
  const auto& names = engine_->counters().reactions();
  const std::size_t burst = static_cast<std::size_t>(std::find(names.begin(), names.end(), "burst") - names.begin());
  EXPECT_EQ(engine_->counters().get(burst, core::ReactionResult::ok), 20u);
  EXPECT_EQ(engine_->counters().get(burst, core::ReactionResult::rate_limited), 9980u);
  EXPECT_EQ(control_.flag_calls().size(), 20u);
  EXPECT_EQ(audit().size(), 10000u);

  ASSERT_FALSE(health_ms.empty());
  std::sort(health_ms.begin(), health_ms.end());
  const double p50 = health_ms[health_ms.size() / 2];
  const double p99 = health_ms[health_ms.size() * 99 / 100];
  const double max = health_ms.back();
  std::printf("burst: 10000 alerts in %.2f s, %d answers were 503 (queue full, retried); "
              "health probe during the burst: n=%zu p50=%.2f ms p99=%.2f ms max=%.2f ms\n",
              burst_s, responses_503.load(), health_ms.size(), p50, p99, max);
  RecordProperty("burst_seconds", std::to_string(burst_s));
  RecordProperty("health_p99_ms", std::to_string(p99));
  // Generous bound: the point is that the server is not stuck behind the reactions.
  EXPECT_LT(max, 2000.0);

  // The metrics collector shows the same counts.
  metrics::ReactionCollector collector([this]() -> const core::ReactionCounters& { return engine_->counters(); },
                                      [this] { return receiver_->requests_by_code(); });
  const std::string text = prometheus::TextSerializer().Serialize(collector.Collect());
  EXPECT_NE(text.find("mltap_reactions_total{reaction=\"burst\",result=\"rate_limited\"} 9980"), std::string::npos) << text;
  EXPECT_NE(text.find("mltap_reactions_total{reaction=\"burst\",result=\"ok\"} 20"), std::string::npos);
  EXPECT_NE(text.find("mltap_webhook_requests_total{code=\"200\"} 100"), std::string::npos) << text;
}

// ---------------------------------------------------------------------------------------------

TEST(WebhookToken, LoadsAPrivateTokenFile) {
  mltap::testing::TempDir dir;
  const std::string path = dir.file("token");
  mltap::testing::write_file(path, "  " + kToken + "\n", 0600);
  EXPECT_EQ(load_bearer_token(path), kToken);
  ::chmod(path.c_str(), 0640);
  EXPECT_EQ(load_bearer_token(path), kToken);  // group-readable is fine (Alertmanager's group)
  auto fails = [&](const std::string& want) {
    try {
      load_bearer_token(path);
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      return;
    }
    ADD_FAILURE() << "accepted, expected: " << want;
  };
  ::chmod(path.c_str(), 0644);
  fails("others");
  ::chmod(path.c_str(), 0660);
  fails("writable by group");
  mltap::testing::write_file(path, "short\n", 0600);
  fails("shorter than 16");
  mltap::testing::write_file(path, "has spaces inside the token\n", 0600);
  fails("may only hold");
  const std::string missing = dir.file("missing");
  EXPECT_THROW(load_bearer_token(missing), std::runtime_error);
  EXPECT_THROW(load_bearer_token(dir.path().string()), std::runtime_error);
}

TEST(WebhookToken, ComparesWholeStrings) {
  EXPECT_TRUE(constant_time_equal("abcdef", "abcdef"));
  EXPECT_FALSE(constant_time_equal("abcdeg", "abcdef"));
  EXPECT_FALSE(constant_time_equal("abcde", "abcdef"));
  EXPECT_FALSE(constant_time_equal("abcdefg", "abcdef"));
  EXPECT_FALSE(constant_time_equal("", "abcdef"));
  EXPECT_FALSE(constant_time_equal(std::string_view("abc\0ef", 6), "abcdef"));
}

TEST(WebhookConfigSection, ParsesAndRefuses) {
  auto parse = [](const std::string& yaml) {
    auto root = core::load_text(yaml, "c.yaml");
    return parse_webhook_config(core::ConfigSection(root, "c.yaml", "").child("webhook"));
  };
  const WebhookConfig c = parse("webhook:\n  token_file: /etc/mltap/webhook.token\n  max_body_bytes: 2MiB\n  max_alerts: 10\n");
  EXPECT_TRUE(c.enabled);
  EXPECT_EQ(c.max_body_bytes, 2u << 20);
  EXPECT_EQ(c.limits.max_alerts, 10u);
  EXPECT_FALSE(parse("agent: {}\n").enabled);
  EXPECT_THROW(parse("webhook:\n  enabled: true\n"), core::ConfigError);
  try {
    parse("webhook:\n  token_file: /x\n  tokenfile: /y\n");
    ADD_FAILURE();
  } catch (const core::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("c.yaml:3:3"), std::string::npos) << e.what();
  }
}

std::int64_t timegm_ns(int y, int mo, int d, int h, int mi, int s) {
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return static_cast<std::int64_t>(::timegm(&tm)) * 1'000'000'000;
}

TEST(Rfc3339, AgreesWithTimegm) {
  EXPECT_EQ(parse_rfc3339_ns("2024-05-01T12:00:00Z"), timegm_ns(2024, 5, 1, 12, 0, 0));
  EXPECT_EQ(parse_rfc3339_ns("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_rfc3339_ns("2000-02-29T23:59:59Z"), timegm_ns(2000, 2, 29, 23, 59, 59));
  EXPECT_EQ(parse_rfc3339_ns("1999-12-31T23:59:59.5Z"), timegm_ns(1999, 12, 31, 23, 59, 59) + 500'000'000);
  EXPECT_EQ(parse_rfc3339_ns("2024-05-01T12:00:00.123456789Z"), timegm_ns(2024, 5, 1, 12, 0, 0) + 123456789);
  EXPECT_EQ(parse_rfc3339_ns("2024-05-01T12:00:00.1234567891Z"), timegm_ns(2024, 5, 1, 12, 0, 0) + 123456789);
  EXPECT_EQ(parse_rfc3339_ns("2024-05-01T14:30:00+02:30"), timegm_ns(2024, 5, 1, 12, 0, 0));
  EXPECT_EQ(parse_rfc3339_ns("2024-05-01T09:00:00-03:00"), timegm_ns(2024, 5, 1, 12, 0, 0));
  for (int y : {1971, 1999, 2038, 2100, 2200}) {
    EXPECT_EQ(parse_rfc3339_ns(std::to_string(y) + "-03-01T00:00:00Z"), timegm_ns(y, 3, 1, 0, 0, 0)) << y;
  }
  const auto zero = parse_rfc3339_ns("0001-01-01T00:00:00Z");  // Go's zero time
  ASSERT_TRUE(zero);
  EXPECT_LT(*zero, timegm_ns(1700, 1, 1, 0, 0, 0));
  for (const char* bad : {"2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z",
                          "2024-05-01 12:00:00Z", "2024-05-01T12:00:00", "2024-05-01T12:00:00Zjunk",
                          "2024-05-01T24:00:00Z", "2024-05-01T12:00:00.Z", "2024-5-01T12:00:00Z",
                          "2024-05-01T12:00:00+2:00", ""}) {
    EXPECT_FALSE(parse_rfc3339_ns(bad)) << bad;
  }
}

}  // namespace
}  // namespace mltap::webhook
