// JSON of the performance component's published state (GET /api/v1/performance; the CLI's
// `mltap performance` reads it). Undefined metrics are null.
#pragma once

#include <cstdint>

#include <nlohmann/json_fwd.hpp>

#include "agent/api/http_server.hpp"
#include "core/performance_state.hpp"

namespace mltap::api {

// One stream with its windows that start at or after `since_unix_ns`.
nlohmann::json to_json(const core::PerformanceStreamState& s, std::int64_t since_unix_ns);

using PerformanceSource = std::function<std::shared_ptr<const core::PerformanceSnapshot>()>;
// GET /api/v1/performance                      every joined stream, counters only
// GET /api/v1/performance?stream=S[&since=24h] one stream with its windows (default since: 7d)
void register_performance_routes(HttpServer& server, PerformanceSource source);

}  // namespace mltap::api
