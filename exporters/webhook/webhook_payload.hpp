// Strict parsing of Alertmanager's webhook payload, version 4. Every field Alertmanager sends is
// required with its JSON type (truncatedAlerts may be absent: older Alertmanagers omit it);
// fields this version does not know are ignored, so a newer Alertmanager still works. Sizes are
// bounded before anything is copied.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/alert.hpp"

namespace mltap::webhook {

struct PayloadLimits {
  std::size_t max_alerts = 1000;               // per request (Alertmanager: max_alerts)
  std::size_t max_labels = 64;                 // per label/annotation set
  std::size_t max_label_value_bytes = 1024;
  std::size_t max_annotation_value_bytes = 16384;
  std::size_t max_string_bytes = 4096;         // receiver, groupKey, URLs, names
  std::size_t max_depth = 8;                   // JSON nesting (the format needs 4)
};

struct WebhookAlert {
  core::AlertStatus status = core::AlertStatus::firing;
  core::LabelSet labels;
  core::LabelSet annotations;
  std::string starts_at;
  std::string ends_at;
  std::int64_t starts_at_unix_ns = 0;  // normalized, for idempotency keys
  std::string generator_url;
  std::string fingerprint;
};

struct WebhookPayload {
  std::string version;
  std::string group_key;
  std::uint64_t truncated_alerts = 0;
  core::AlertStatus status = core::AlertStatus::firing;
  std::string receiver;
  core::LabelSet group_labels;
  core::LabelSet common_labels;
  core::LabelSet common_annotations;
  std::string external_url;
  std::vector<WebhookAlert> alerts;
};

enum class PayloadError {
  none,
  syntax,      // not JSON, or nested too deeply
  invalid,     // a field is missing, mistyped, too large or out of its domain
  version,     // version is not "4"
  too_many,    // more alerts than max_alerts
};

struct ParseResult {
  std::optional<WebhookPayload> payload;
  PayloadError error = PayloadError::none;
  std::string message;  // names the field: "alerts[3].startsAt: ..."
};

ParseResult parse_webhook_payload(std::string_view body, const PayloadLimits& limits);

// RFC 3339 timestamp ("2024-05-01T12:00:00.123456789Z", "...+02:00") as ns since the epoch,
// saturated outside [1678, 2261]; nullopt when malformed. "0001-01-01T00:00:00Z" (Go's zero
// time, Alertmanager's "unset") parses to the minimum.
std::optional<std::int64_t> parse_rfc3339_ns(std::string_view text);

}  // namespace mltap::webhook
