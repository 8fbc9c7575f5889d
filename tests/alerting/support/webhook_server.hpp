// A real cpp-httplib server on a free loopback port with the webhook mounted, plus a health
// route the tests use to see whether the server still answers while it is busy.
#pragma once

#include <csignal>
#include <memory>
#include <string>
#include <thread>

#include <httplib.h>

#include "agent/api/webhook_route.hpp"
#include "exporters/webhook/webhook_receiver.hpp"

namespace mltap::testing {

class WebhookServer {
 public:
  explicit WebhookServer(webhook::WebhookReceiver& receiver) {
    ::signal(SIGPIPE, SIG_IGN);  // a peer closing mid-request must not kill the test
    api::register_webhook_route(server_, receiver);
    server_.Get("/healthz", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok", "text/plain"); });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    for (int i = 0; i < 5000 && !server_.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~WebhookServer() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + webhook::kWebhookPath; }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace mltap::testing
