#include "agent/api/routes.hpp"

#include <httplib.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/api/detector_json.hpp"
#include "agent/api/event_json.hpp"
#include "agent/api/streams_json.hpp"
#include "agent/api/webhook_route.hpp"

namespace mltap::api {
namespace {

using nlohmann::json;

void reply_json(httplib::Response& res, const json& body) {
  res.set_content(body.dump(), "application/json");
}

// GET /api/v1/findings: open ones and the recently closed, newest first; one by id.
void register_findings(httplib::Server& srv, std::shared_ptr<const AgentRoutes> r) {
  auto finding_json = [r](const core::Finding& f) {
    json j = to_json(f);
    j["related"] =
        related_json(r->related ? r->related(f) : std::vector<correlator::RelatedEvent>{});
    return j;
  };
  srv.Get("/api/v1/findings", [r, finding_json](const httplib::Request&, httplib::Response& res) {
    json open = json::array(), closed = json::array();
    if (const auto snap = r->detectors ? r->detectors() : nullptr) {
      for (const auto& f : snap->open_findings) open.push_back(finding_json(f));
      for (const auto& f : snap->closed_findings) closed.push_back(finding_json(f));
    }
    reply_json(res, json{{"open", open}, {"closed", closed}});
  });
  srv.Get(R"(/api/v1/findings/(\d{1,19}))",
          [r, finding_json](const httplib::Request& req, httplib::Response& res) {
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
          });
}

}  // namespace

void register_routes(HttpServer& server, AgentRoutes routes) {
  auto r = std::make_shared<const AgentRoutes>(std::move(routes));
  httplib::Server& srv = server.native();
  srv.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  srv.Get("/api/v1/streams", [r](const httplib::Request& req, httplib::Response& res) {
    reply_json(res, streams_to_json(*r->streams(req.has_param("fresh"))));
  });
  register_findings(srv, r);
  // Detector state per stream and feature (scores, decisions, quality ratios).
  srv.Get("/api/v1/detectors", [r](const httplib::Request&, httplib::Response& res) {
    const auto snap = r->detectors ? r->detectors() : nullptr;
    if (!snap) return res.set_content(R"({"enabled": false})", "application/json");
    reply_json(res, to_json(*snap));
  });
  register_events_routes(srv, r->events);
  if (r->webhook) register_webhook_route(srv, *r->webhook);
}

}  // namespace mltap::api
