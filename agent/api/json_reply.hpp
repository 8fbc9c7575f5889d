// Small helpers the API's route files share: a JSON error reply, a JSON number that is null when
// not finite (JSON has no NaN or infinity), and the read API's route options. One definition
// each, so the route files can also be compiled together (the sanitizer builds' unity batches).
#pragma once

#include <cmath>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/api/http_server.hpp"

namespace mltap::api {

// Everything under /api/v1/ but the webhook (which has its own token) is the read API.
inline const RouteOptions kReadApi{Access::read_api, 0, {}, {}};

inline void reply_json_error(HttpResponse& res, int status, const std::string& what) {
  res.status = status;
  res.set_content(nlohmann::json{{"error", what}}.dump(), "application/json");
}

inline nlohmann::json json_number_or_null(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

}  // namespace mltap::api
