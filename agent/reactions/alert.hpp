// One alert as the reaction engine sees it: already validated by whoever received it (the
// webhook receiver checks every field of Alertmanager's payload before building one).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace mltap::react {

enum class AlertStatus { firing, resolved };

constexpr std::string_view alert_status_name(AlertStatus s) noexcept {
  return s == AlertStatus::firing ? "firing" : "resolved";
}

using LabelSet = std::map<std::string, std::string>;

struct AlertEvent {
  std::string fingerprint;  // Alertmanager's hex fingerprint of the label set
  AlertStatus status = AlertStatus::firing;
  LabelSet labels;
  LabelSet annotations;
  std::string starts_at;     // RFC 3339 as received (validated)
  std::string ends_at;       // RFC 3339 as received; "0001-01-01T00:00:00Z" when unset
  std::string generator_url;
  std::string receiver;      // the Alertmanager receiver that sent it (for the audit log)
  std::chrono::steady_clock::time_point received{};  // when the receiver accepted it

  std::string label(const std::string& name) const {
    auto it = labels.find(name);
    return it == labels.end() ? std::string() : it->second;
  }
};

}  // namespace mltap::react
