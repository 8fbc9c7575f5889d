// The HTTP client of mltapd's adapters (the Alertmanager push): one POST of a JSON body with
// timeouts, on cpp-httplib, which stays in agent/api.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "exporters/alertmanager/alertmanager_pusher.hpp"

namespace mltap::api {

// An alertmanager::HttpPost: status 0 and `error` when nothing answered within `timeout`.
alertmanager::HttpReply http_post(const std::string& scheme_host_port, const std::string& path,
                                  const std::vector<std::pair<std::string, std::string>>& headers,
                                  const std::string& json_body, std::chrono::nanoseconds timeout);

}  // namespace mltap::api
