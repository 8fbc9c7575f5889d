#include "agent/api/webhook_route.hpp"

#include <cstdint>
#include <optional>
#include <string>

#include "core/log.hpp"

#include "agent/api/http_server.hpp"

namespace mltap::api {
namespace {

// Every answer is counted by code (mltap_webhook_requests_total), refusals included.
HttpResponse to_http(webhook::WebhookReceiver& receiver, const webhook::WebhookResponse& r, bool close) {
  receiver.count(r.status);
  HttpResponse res;
  res.status = r.status;
  res.headers = r.headers;
  // Whatever of the body is left unread must not be parsed as the next request.
  res.close = close;
  res.set_content(r.body, "application/json");
  return res;
}

}  // namespace

void register_webhook_route(HttpServer& server, webhook::WebhookReceiver& receiver) {
  RouteOptions options;
  options.access = Access::open;  // the receiver checks its own token before any body is read
  options.max_body_bytes = static_cast<std::size_t>(receiver.config().max_body_bytes);
  options.before_body = [&receiver](const HttpRequest& req) -> std::optional<HttpResponse> {
    std::string length_text;  // parsed strictly by the receiver
    std::optional<std::string_view> length;
    if (req.has_header("Content-Length")) {
      length_text = req.header("Content-Length");
      length = length_text;
    }
    if (auto refused = receiver.check_request(req.header("Authorization"), req.header("Content-Type"), length)) {
      return to_http(receiver, *refused, true);
    }
    return std::nullopt;
  };
  options.body_too_large = [&receiver] { return to_http(receiver, receiver.body_too_large(), true); };
  server.post(
      webhook::kWebhookPath,
      [&receiver](const HttpRequest& req, HttpResponse& res) {
        try {
          res = to_http(receiver, receiver.handle_body(req.body), false);
        } catch (const std::exception& e) {
          core::log::error("webhook: {}", e.what());
          webhook::WebhookResponse r;
          r.status = 500;
          r.body = R"({"status":"error","error":"internal error"})";
          res = to_http(receiver, r, true);
        }
      },
      std::move(options));
}

}  // namespace mltap::api
