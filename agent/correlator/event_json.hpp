// JSON and text forms of system events and related events: what GET /api/v1/events and the
// `related` field of GET /api/v1/findings return, and what `mltap explain` prints.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "correlator/correlator.hpp"
#include "correlator/system_event.hpp"
#include "detectors/finding.hpp"

namespace mltap::correlate {

nlohmann::json to_json(const SystemEvent& e);
// Strict inverse of to_json: throws std::invalid_argument naming the bad field.
SystemEvent system_event_from_json(const nlohmann::json& j);

nlohmann::json to_json(const RelatedEvent& r);
nlohmann::json related_json(const std::vector<RelatedEvent>& related);
// The finding fields the events API and `mltap explain` use (same names as /api/v1/findings).
nlohmann::json finding_json(const detect::Finding& f);

// One line a human reads: "train.py (pid 12) was killed by SIGKILL".
std::string describe(const SystemEvent& e);
// "2025-01-31 12:03:10.123Z" (UTC).
std::string format_time(std::uint64_t unix_ns);
// "350 ms", "12 s", "4m05s", "2h10m".
std::string format_duration(std::uint64_t ns);
std::string signal_name(int sig);  // "SIGKILL"; "signal 77" when unknown
std::string errno_name(int err);   // "ECONNREFUSED"; "error 999" when unknown

}  // namespace mltap::correlate
