// Every route of mltapd's HTTP API, mounted on its one HttpServer:
//   GET  /healthz                      "ok"
//   GET  /api/v1/streams[?fresh]       the ingest snapshot (mltap status)
//   GET  /api/v1/findings              open and recently closed findings with related events
//   GET  /api/v1/findings/<id>         one of them
//   GET  /api/v1/detectors             detector state per stream and feature
//   GET  /api/v1/events?stream=...     a stream's system events (events_api.hpp; mltap explain)
//   GET  /api/v1/performance[?stream=]  label join and realized metrics (performance_json.hpp)
//   POST /api/v1/alerts/webhook        Alertmanager's webhook (webhook_route.hpp)
// plus /metrics (http_server.hpp). The routes read published state through the callbacks below,
// so they depend on no component's implementation.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "agent/api/events_api.hpp"
#include "agent/api/http_server.hpp"
#include "agent/api/performance_json.hpp"
#include "agent/correlator/correlator.hpp"
#include "core/detector_state.hpp"
#include "core/ingest_state.hpp"
#include "exporters/webhook/webhook_receiver.hpp"

namespace mltap::api {

struct AgentRoutes {
  // The latest ingest snapshot; with `fresh`, one taken after the request arrived.
  std::function<std::shared_ptr<const core::IngestSnapshot>(bool fresh)> streams;
  // The latest detector snapshot; null when the detectors are disabled.
  std::function<std::shared_ptr<const core::DetectorSnapshot>()> detectors;
  // The system events related to a finding, most relevant first.
  std::function<std::vector<correlator::RelatedEvent>(const core::Finding&)> related;
  EventsApi events;
  PerformanceSource performance;  // null: the performance component is disabled
  webhook::WebhookReceiver* webhook = nullptr;  // null: the webhook is disabled
};

// Mounts every route on `server`; what the callbacks reach must outlive it.
void register_routes(HttpServer& server, AgentRoutes routes);

}  // namespace mltap::api
