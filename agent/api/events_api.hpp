// GET /api/v1/events?stream=NAME[&since=DURATION]: the stream's producers, their timeline, and
// the stream's findings with their related events. Registered on mltapd's HTTP server; the
// agent supplies findings and producers through callbacks (no dependency on the detector or
// ingest implementation).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "agent/correlator/correlator.hpp"


namespace mltap::api {

class HttpServer;

struct EventsApi {
  const correlator::Correlator* correlator = nullptr;
  // The stream's findings (open and recently closed); nullopt when the stream is unknown.
  std::function<std::optional<std::vector<core::Finding>>(const std::string& stream)> findings_of_stream;
  // The stream's live producers (the correlator adds the ones it remembers).
  std::function<std::vector<core::ProducerId>(const std::string& stream)> producers_of_stream;
  std::chrono::nanoseconds window = correlator::kDefaultWindow;               // related events per finding
  std::chrono::nanoseconds default_since = std::chrono::hours(1);  // timeline
  std::chrono::nanoseconds max_since = std::chrono::hours(24 * 7);
  std::function<std::uint64_t()> now_unix_ns;                     // injectable; default: realtime
};

// The response body (pure: also what tests and other transports use).
nlohmann::json events_response(const correlator::Correlator& correlator, const std::string& stream,
                               const std::vector<core::Finding>& findings,
                               const std::vector<core::ProducerId>& producers,
                               std::uint64_t since_unix_ns, std::chrono::nanoseconds window);

// Checks a stream name from a query string: 1..256 printable characters.
bool valid_stream_name(const std::string& s);

void register_events_routes(HttpServer& server, EventsApi api);

}  // namespace mltap::api
