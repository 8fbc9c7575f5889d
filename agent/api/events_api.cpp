#include "agent/api/events_api.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "agent/api/event_json.hpp"
#include "agent/api/http_server.hpp"
#include "agent/api/json_reply.hpp"
#include "core/config_reader.hpp"
#include "core/time.hpp"

namespace mltap::api {

using nlohmann::json;

bool valid_stream_name(const std::string& s) {
  if (s.empty() || s.size() > 256) return false;
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return c >= 0x20 && c != 0x7f; });
}

json events_response(const correlator::Correlator& correlator, const std::string& stream,
                     const std::vector<core::Finding>& findings,
                     const std::vector<core::ProducerId>& producers, std::uint64_t since_unix_ns,
                     std::chrono::nanoseconds window) {
  std::vector<core::ProducerId> all = producers;
  for (const auto& p : correlator.producers_of(stream)) {
    if (std::find(all.begin(), all.end(), p) == all.end()) all.push_back(p);
  }
  json prod = json::array();
  for (const auto& p : all) prod.push_back({{"pid", p.pid}, {"start_ticks", p.start_ticks}});
  json events = json::array();
  for (const auto& e : correlator.events_for(all, since_unix_ns)) events.push_back(to_json(e));
  json fs = json::array();
  for (const auto& f : findings) {
    json j = finding_json(f);
    j["related"] = related_json(correlator.related(f, all, window));
    fs.push_back(std::move(j));
  }
  return {{"stream", stream},
          {"since_unix_ns", since_unix_ns},
          {"window_seconds", static_cast<double>(window.count()) / 1e9},
          {"producers", std::move(prod)},
          {"events", std::move(events)},
          {"findings", std::move(fs)}};
}

void register_events_routes(HttpServer& server, EventsApi api) {
  if (!api.now_unix_ns) api.now_unix_ns = core::unix_now_ns;
  server.get("/api/v1/events", [api](const HttpRequest& req, HttpResponse& res) {
    if (!req.has_param("stream")) {
      reply_json_error(res, 400, "missing query parameter 'stream' (GET /api/v1/events?stream=NAME)");
      return;
    }
    const std::string stream = req.param("stream");
    if (!valid_stream_name(stream)) {
      reply_json_error(res, 400, "parameter 'stream' must be 1..256 printable characters");
      return;
    }
    std::chrono::nanoseconds since = api.default_since;
    if (req.has_param("since")) {
      auto d = core::parse_duration(req.param("since"));
      if (!d || d->count() <= 0 || *d > api.max_since) {
        reply_json_error(res, 400, "parameter 'since' must be a duration such as 15m or 2h, at most 7d");
        return;
      }
      since = *d;
    }
    if (!api.correlator) {
      reply_json_error(res, 503, "system events are not available in this agent");
      return;
    }
    std::optional<std::vector<core::Finding>> findings;
    if (api.findings_of_stream) findings = api.findings_of_stream(stream);
    std::vector<core::ProducerId> producers;
    if (api.producers_of_stream) producers = api.producers_of_stream(stream);
    if (!findings && producers.empty() && api.correlator->producers_of(stream).empty()) {
      reply_json_error(res, 404, "unknown stream '" + stream + "'");
      return;
    }
    const std::uint64_t now = api.now_unix_ns();
    const auto back = static_cast<std::uint64_t>(since.count());
    const json body = events_response(*api.correlator, stream, findings.value_or(std::vector<core::Finding>{}),
                                      producers, now > back ? now - back : 0, api.window);
    res.set_content(body.dump(), "application/json");
  }, RouteOptions{Access::read_api, 0, {}, {}});
}

}  // namespace mltap::api
