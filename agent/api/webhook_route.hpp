// POST /api/v1/alerts/webhook: the HTTP side of the Alertmanager webhook receiver. The body is
// read incrementally (by agent/api/http_server) and refused past webhook.max_body_bytes; nothing is read before the token is
// checked (exporters/webhook decides every answer).
#pragma once

#include "exporters/webhook/webhook_receiver.hpp"


namespace mltap::api {

class HttpServer;

// Mounts the route on `server`; `receiver` must outlive it.
void register_webhook_route(HttpServer& server, webhook::WebhookReceiver& receiver);

}  // namespace mltap::api
