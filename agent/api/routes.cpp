#include "agent/api/routes.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/api/detector_json.hpp"
#include "agent/api/event_json.hpp"
#include "agent/api/json_reply.hpp"
#include "agent/api/streams_json.hpp"
#include "agent/api/webhook_route.hpp"

namespace mltap::api {
namespace {

using nlohmann::json;


void reply_json(HttpResponse& res, const json& body) {
  res.set_content(body.dump(), "application/json");
}

// GET /api/v1/findings: open ones and the recently closed, newest first; one by id.
void register_findings(HttpServer& srv, std::shared_ptr<const AgentRoutes> r) {
  auto finding_json = [r](const core::Finding& f) {
    json j = to_json(f);
    j["related"] =
        related_json(r->related ? r->related(f) : std::vector<correlator::RelatedEvent>{});
    return j;
  };
  srv.get("/api/v1/findings", [r, finding_json](const HttpRequest&, HttpResponse& res) {
    json open = json::array(), closed = json::array();
    if (const auto snap = r->detectors ? r->detectors() : nullptr) {
      for (const auto& f : snap->open_findings) open.push_back(finding_json(f));
      for (const auto& f : snap->closed_findings) closed.push_back(finding_json(f));
    }
    reply_json(res, json{{"open", open}, {"closed", closed}});
  }, kReadApi);
  srv.get(R"(/api/v1/findings/(\d{1,19}))",
          [r, finding_json](const HttpRequest& req, HttpResponse& res) {
            const std::uint64_t id = std::stoull(req.matches[1]);
            if (const auto snap = r->detectors ? r->detectors() : nullptr) {
              for (const auto* list : {&snap->open_findings, &snap->closed_findings}) {
                for (const auto& f : *list) {
                  if (f.id == id) return reply_json(res, finding_json(f));
                }
              }
            }
            res.status = 404;
            reply_json(res, json{{"error", "no finding " + std::to_string(id)}});
          },
          kReadApi);
}

}  // namespace

void register_routes(HttpServer& server, AgentRoutes routes) {
  auto r = std::make_shared<const AgentRoutes>(std::move(routes));
  HttpServer& srv = server;
  srv.get("/healthz", [](const HttpRequest&, HttpResponse& res) {
    res.set_content("ok\n", "text/plain");
  });
  srv.get("/api/v1/streams", [r](const HttpRequest& req, HttpResponse& res) {
    reply_json(res, streams_to_json(*r->streams(req.has_param("fresh"))));
  }, kReadApi);
  register_findings(srv, r);
  // Detector state per stream and feature (scores, decisions, quality ratios).
  srv.get("/api/v1/detectors", [r](const HttpRequest&, HttpResponse& res) {
    const auto snap = r->detectors ? r->detectors() : nullptr;
    if (!snap) return res.set_content(R"({"enabled": false})", "application/json");
    reply_json(res, to_json(*snap));
  }, kReadApi);
  register_events_routes(srv, r->events);
  register_performance_routes(srv, r->performance);
  if (r->webhook) register_webhook_route(srv, *r->webhook);
}

}  // namespace mltap::api
