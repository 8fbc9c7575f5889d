// POST /api/v1/alerts/webhook: the HTTP side of the Alertmanager webhook receiver. The body is
// read incrementally and refused past webhook.max_body_bytes; nothing is read before the token is
// checked (exporters/webhook decides every answer).
#pragma once

#include "exporters/webhook/webhook_receiver.hpp"

namespace httplib {
class Server;
}

namespace mltap::api {

// Mounts the route on `server`; `receiver` must outlive it.
void register_webhook_route(httplib::Server& server, webhook::WebhookReceiver& receiver);

}  // namespace mltap::api
