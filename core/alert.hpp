// One alert as the reaction engine sees it: already validated by whoever received it (the
// webhook receiver checks every field of Alertmanager's payload before building one), and the
// AlertSink the receiver hands it to (implemented by the reaction engine). Also what mltapd's own
// pushes to Alertmanager counted, for the metrics exporter.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace mltap::core {

enum class AlertStatus { firing, resolved };

constexpr std::string_view alert_status_name(AlertStatus s) noexcept {
  switch (s) {
    case AlertStatus::firing: return "firing";
    case AlertStatus::resolved: return "resolved";
  }
  return "resolved";
}

using LabelSet = std::map<std::string, std::string>;

struct AlertEvent {
  std::string fingerprint;  // Alertmanager's hex fingerprint of the label set
  AlertStatus status = AlertStatus::firing;
  LabelSet labels;
  LabelSet annotations;
  std::string starts_at;  // RFC 3339 as received (validated)
  std::string ends_at;    // RFC 3339 as received; "0001-01-01T00:00:00Z" when unset
  std::string generator_url;
  std::string receiver;  // the Alertmanager receiver that sent it (for the audit log)
  std::chrono::steady_clock::time_point received{};  // when the receiver accepted it

  std::string label(const std::string& name) const {
    auto it = labels.find(name);
    return it == labels.end() ? std::string() : it->second;
  }
};

// Where a receiver hands validated alerts. Implemented by the reaction engine; the webhook receiver
// sees only this interface.
class AlertSink {
 public:
  virtual ~AlertSink() = default;
  enum class Submit { accepted, queue_full, stopped };
  // Never blocks (beyond a short lock). Thread-safe.
  virtual Submit submit(AlertEvent alert) = 0;
  // Names in the alert's request label (comma separated) that no configured reaction has.
  virtual std::vector<std::string> unknown_requested(const AlertEvent& alert) const = 0;
  // Records an alert the receiver refused before it reached the sink (for the audit log).
  virtual void audit_rejected(const AlertEvent& alert, const std::string& result,
                              const std::string& detail) = 0;
};

// Posts of findings to Alertmanager (mltap_alertmanager_pushes_total{result}).
struct AlertPushCounts {
  std::uint64_t ok = 0;        // posts Alertmanager accepted (2xx)
  std::uint64_t failed = 0;    // connection errors, timeouts, 5xx (retried)
  std::uint64_t rejected = 0;  // 4xx (logged; the alerts are retried at the next interval)
};

}  // namespace mltap::core
