// A real prometheus-alertmanager calls the webhook receiver (mounted on a real cpp-httplib
// server) with the bearer token from its http_config; the reactions run, and are undone when
// Alertmanager sends the resolved notification. A receiver configured with a wrong token is
// refused with 403 and runs nothing.
#include <gtest/gtest.h>

#include "agent/reactions/reaction_engine.hpp"
#include "core/config_reader.hpp"
#include "core/time.hpp"
#include "exporters/webhook/webhook_payload.hpp"
#include "exporters/webhook/webhook_receiver.hpp"
#include "support/alertmanager_process.hpp"
#include "support/recording_control_plane.hpp"
#include "support/test_util.hpp"
#include "support/webhook_server.hpp"

namespace mltap::webhook {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

std::string rfc3339_now(std::chrono::seconds offset = 0s) {
  const auto ns = static_cast<std::int64_t>(core::unix_now_ns()) +
                  std::chrono::duration_cast<std::chrono::nanoseconds>(offset).count();
  return core::format_utc(static_cast<std::uint64_t>(ns));
}

TEST(AlertmanagerToWebhook, ReactionRunsAndIsUndoneOnResolve) {
  mltap::testing::TempDir dir;
  const std::string token_file = dir.file("webhook.token");
  const std::string wrong_token_file = dir.file("wrong.token");
  mltap::testing::write_file(token_file, "am-to-mltapd-0123456789abcdef\n", 0600);
  mltap::testing::write_file(wrong_token_file, "not-the-token-0123456789abcdef\n", 0600);
  const std::string exec_out = dir.file("exec.json");

  reactions::testing::RecordingControlPlane control;
  const std::string yaml = "reactions:\n  audit_log: " + dir.file("audit.jsonl") + R"(
  actions:
    fallback:
      type: producer-flag
      matchers: ['alertname =~ "MltapStreamDrift|Intruder"']
      flag: use_fallback
    notify:
      type: exec
      matchers: ['alertname = "MltapStreamDrift"']
      path: )" + std::string(REACTION_PROBE) + "\n      args: [record, " + exec_out + "]\n      env_labels: [stream, severity]\n";
  auto root = core::load_text(yaml, "test.yaml");
  reactions::ReactionEngine engine(reactions::parse_reactions_config(core::ConfigSection(root, "test.yaml", "").child("reactions")),
                               control);
  engine.start();
  WebhookConfig wc;
  wc.enabled = true;
  WebhookReceiver receiver(wc, load_bearer_token(token_file), engine);
  mltap::testing::WebhookServer server(receiver);

  const std::string am_config = R"(
route:
  receiver: mltapd
  group_by: [alertname, stream]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - receiver: intruder
      matchers: ['alertname = "Intruder"']
receivers:
  - name: mltapd
    webhook_configs:
      - url: )" + server.url() + R"(
        send_resolved: true
        max_alerts: 100
        http_config:
          authorization:
            type: Bearer
            credentials_file: )" + token_file + R"(
  - name: intruder
    webhook_configs:
      - url: )" + server.url() + R"(
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: )" + wrong_token_file + "\n";
  mltap::testing::AlertmanagerProcess am(am_config);
  ASSERT_TRUE(am.running()) << am.log();

  const json labels = {{"alertname", "MltapStreamDrift"}, {"stream", "fraud"}, {"severity", "critical"},
                       {"component", "scorer"}, {"kind", "drift"}};
  const std::string starts = rfc3339_now(-5s);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(am.post_alerts(json::array({{{"labels", labels}, {"annotations", {{"summary", "drift"}}}, {"startsAt", starts}}})), 200);
  ASSERT_TRUE(mltap::testing::wait_until([&] { return control.flag("fraud", "use_fallback") == 1; }, 20s)) << am.log();
  const double fire_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(mltap::testing::wait_until([&] { return std::filesystem::exists(exec_out); }, 10s));
  ASSERT_TRUE(engine.wait_idle(10s));
  const json recorded = json::parse(mltap::testing::read_file(exec_out));
  EXPECT_NE(std::find(recorded["env"].begin(), recorded["env"].end(), "MLTAP_LABEL_STREAM=fraud"), recorded["env"].end());
  EXPECT_NE(std::find(recorded["env"].begin(), recorded["env"].end(), "MLTAP_ALERT_STATUS=firing"), recorded["env"].end());

  // An Alertmanager receiver with the wrong token is refused; its alert runs nothing.
  ASSERT_EQ(am.post_alerts(json::array({{{"labels", {{"alertname", "Intruder"}, {"stream", "intruded"}}}, {"startsAt", starts}}})), 200);
  ASSERT_TRUE(mltap::testing::wait_until(
      [&] {
        for (const auto& [code, n] : receiver.requests_by_code()) if (code == 403 && n > 0) return true;
        return false;
      },
      20s)) << am.log();
  EXPECT_EQ(control.flag("intruded", "use_fallback"), 0u);

  // Resolve through Alertmanager (endsAt now): the flag is cleared.
  const auto t1 = std::chrono::steady_clock::now();
  ASSERT_EQ(am.post_alerts(json::array({{{"labels", labels}, {"annotations", {{"summary", "drift"}}}, {"startsAt", starts},
                                        {"endsAt", rfc3339_now()}}})), 200);
  ASSERT_TRUE(mltap::testing::wait_until([&] { return control.flag("fraud", "use_fallback") == 0 && !control.flag_calls().empty() &&
                                                      control.flag_calls().back().value == 0; }, 20s)) << am.log();
  const double resolve_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();
  std::printf("Alertmanager -> webhook: reaction %.0f ms after the alert was posted, undone %.0f ms after it was resolved\n",
              fire_ms, resolve_ms);
  ASSERT_TRUE(engine.wait_idle(10s));

  std::vector<std::string> decisions;
  for (const auto& line : mltap::testing::read_json_lines(dir.file("audit.jsonl"))) {
    decisions.push_back(line["reaction"].get<std::string>() + ":" + line["action"].get<std::string>() + ":" +
                        line["result"].get<std::string>());
  }
  std::sort(decisions.begin(), decisions.end());
  EXPECT_EQ(decisions, (std::vector<std::string>{"fallback:apply:ok", "fallback:undo:undone", "notify:apply:ok"}));
  EXPECT_EQ(control.flag_calls().size(), 2u) << "Alertmanager's retries and repeats must not re-run the reaction";
}

}  // namespace
}  // namespace mltap::webhook
