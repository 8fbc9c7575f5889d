// Direct push of mltapd's findings to Alertmanager (POST <url>/api/v2/alerts), without waiting for
// Prometheus to scrape and evaluate rules. A new finding is posted within poll_interval; open
// findings are re-posted every `interval` with endsAt = now + 4 * interval (Alertmanager resolves
// an alert that is not re-sent before its endsAt, e.g. when mltapd dies); a closed or vanished
// finding is posted once more with endsAt = its close time, which resolves it. Failed posts are
// retried with exponential backoff. Everything runs on the pusher's own thread.
//
// Alert names are those of the Prometheus rules (MltapStreamDrift, ...). With `labels:` set to
// the scrape target's job and instance, an alert pushed here and the same alert from the rules
// have the same label set, and Alertmanager merges them into one.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/alert.hpp"
#include "core/config_reader.hpp"
#include "core/finding.hpp"

namespace mltap::alertmanager {

using namespace std::chrono_literals;

struct AlertmanagerConfig {
  bool enabled = false;                        // default: on when `url` is set
  std::string url;                             // "http://127.0.0.1:9093" (path prefix allowed)
  std::chrono::nanoseconds interval = 60s;     // re-post period of open findings
  std::chrono::nanoseconds poll_interval = 1s; // how soon new and closed findings are pushed
  std::chrono::nanoseconds timeout = 5s;       // per HTTP request
  std::string external_url;                    // mltapd's own URL for finding links
  std::vector<std::pair<std::string, std::string>> labels;  // static labels ("job=mltapd")
  std::string bearer_token_file;               // optional auth towards Alertmanager
  core::Severity min_severity = core::Severity::warning;
  std::uint32_t max_alerts_per_post = 500;
};

// The `alertmanager:` section. Throws core::ConfigError.
AlertmanagerConfig parse_alertmanager_config(core::ConfigSection section);

// A finding with the correlator's related events, human-readable: candidate causes (before the
// finding's onset, most plausible first) and, apart, what followed the onset (oldest first).
struct PushableFinding {
  core::Finding finding;
  std::vector<std::string> related_events;
  std::vector<std::string> after_onset_events;
};
// Current findings, open and recently closed. Called on the pusher's thread: must be thread-safe
// and cheap (copy a snapshot).
using FindingsProvider = std::function<std::vector<PushableFinding>()>;

// What the pusher needs of an HTTP client: one POST of a JSON body. mltapd passes agent/api's
// (api::http_post), so the HTTP library stays there.
struct HttpReply {
  int status = 0;     // 0: no answer
  std::string body;
  std::string error;  // why there was no answer
};
using HttpPost = std::function<HttpReply(const std::string& scheme_host_port, const std::string& path,
                                         const std::vector<std::pair<std::string, std::string>>& headers,
                                         const std::string& json_body, std::chrono::nanoseconds timeout)>;

// "MltapStreamDrift", "MltapStreamDataQuality", ...: the Prometheus rule for the same kind.
std::string alert_name_for(core::FindingKind kind);

// One Alertmanager v2 postable alert for `f`. `ends_at_ns` = 0 leaves endsAt out.
nlohmann::json finding_to_alert(const PushableFinding& f, const AlertmanagerConfig& config,
                                std::uint64_t ends_at_ns);

class AlertmanagerPusher {
 public:
  // Throws std::runtime_error when the URL or token file is unusable.
  AlertmanagerPusher(AlertmanagerConfig config, FindingsProvider provider, HttpPost post);
  ~AlertmanagerPusher();  // stop()
  AlertmanagerPusher(const AlertmanagerPusher&) = delete;
  AlertmanagerPusher& operator=(const AlertmanagerPusher&) = delete;

  void start();
  void stop();
  // Look at the findings now (e.g. the detector engine opened or closed one).
  void notify();

  // What mltap_alertmanager_pushes_total{result} shows.
  core::AlertPushCounts counts() const noexcept;
  std::size_t tracked() const;  // findings currently pushed as open

 private:
  struct Sent {
    std::string labels_key;      // identity in Alertmanager
    nlohmann::json alert;        // last posted (for resolving it)
    std::chrono::steady_clock::time_point last_sent;
  };
  void run();
  void cycle();
  bool post(const nlohmann::json& alerts);

  AlertmanagerConfig config_;
  FindingsProvider provider_;
  HttpPost post_;
  std::string scheme_host_port_;
  std::string path_;
  std::string token_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool wake_ = false;
  std::thread thread_;

  // Pusher thread only (tracked() reads the size under mu_).
  std::map<std::uint64_t, Sent> sent_;
  std::size_t sent_size_ = 0;
  std::uint32_t failures_ = 0;
  std::chrono::steady_clock::time_point retry_at_{};

  std::atomic<std::uint64_t> ok_{0}, failed_{0}, rejected_{0};
};

}  // namespace mltap::alertmanager
