// Wall-clock time as the agent reports it: unix nanoseconds, and UTC text in the few forms that
// leave mltapd (JSON APIs, the audit log, Alertmanager, incident bundle names, `mltap explain`).
// Every UTC text is made here, so they agree on rounding (milliseconds, truncated) and on "Z".
#pragma once

#include <cstdint>
#include <string>

namespace mltap::core {

// CLOCK_REALTIME in nanoseconds since the epoch.
std::uint64_t unix_now_ns() noexcept;

enum class UtcStyle {
  rfc3339,   // "2024-05-01T12:00:00.123Z"  (audit log, Alertmanager)
  basic,     // "20240501T120000.123Z"      (ISO 8601 basic: file names)
  readable,  // "2024-05-01 12:00:00.123Z"  (text for people)
};

// `unix_ns` as UTC text, to the millisecond.
std::string format_utc(std::uint64_t unix_ns, UtcStyle style = UtcStyle::rfc3339);

}  // namespace mltap::core
