// mltapd's real HTTP server (agent/api) on a free loopback port with the webhook mounted, plus a
// health route the tests use to see whether the server still answers while it is busy.
#pragma once

#include <csignal>
#include <memory>
#include <stdexcept>
#include <string>

#include "agent/api/http_server.hpp"
#include "agent/api/webhook_route.hpp"
#include "exporters/webhook/webhook_receiver.hpp"

namespace mltap::testing {

class WebhookServer {
 public:
  explicit WebhookServer(webhook::WebhookReceiver& receiver) : server_(api::ListenAddress{"127.0.0.1", 0}) {
    ::signal(SIGPIPE, SIG_IGN);  // a peer closing mid-request must not kill the test
    api::register_webhook_route(server_, receiver);
    server_.get("/healthz", [](const api::HttpRequest&, api::HttpResponse& res) { res.set_content("ok", "text/plain"); });
    std::string error;
    if (!server_.start(error)) throw std::runtime_error(error);
  }
  ~WebhookServer() { server_.stop(); }
  int port() const { return server_.bound_port(); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port()) + webhook::kWebhookPath; }

 private:
  api::HttpServer server_;
};

}  // namespace mltap::testing
