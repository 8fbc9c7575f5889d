#include "agent/api/webhook_route.hpp"

#include <httplib.h>

#include <cstdint>
#include <optional>
#include <string>

#include <spdlog/spdlog.h>

namespace mltap::api {

void register_webhook_route(httplib::Server& server, webhook::WebhookReceiver& receiver) {
  auto write = [&receiver](httplib::Response& res, const webhook::WebhookResponse& r, bool close) {
    receiver.count(r.status);
    res.status = r.status;
    for (const auto& [k, v] : r.headers) res.set_header(k, v);
    // Whatever of the body is left unread must not be parsed as the next request.
    if (close) res.set_header("Connection", "close");
    res.set_content(r.body, "application/json");
  };
  server.Post(
      webhook::kWebhookPath, [&receiver, write](const httplib::Request& req, httplib::Response& res,
                                                const httplib::ContentReader& reader) {
        try {
          std::optional<std::uint64_t> length;
          if (req.has_header("Content-Length")) {
            try {
              length = std::stoull(req.get_header_value("Content-Length"));
            } catch (...) {
              write(res, receiver.body_too_large(), true);
              return;
            }
          }
          if (auto refused = receiver.check_request(req.get_header_value("Authorization"),
                                                    req.get_header_value("Content-Type"), length)) {
            write(res, *refused, true);
            return;
          }
          const std::uint64_t max = receiver.config().max_body_bytes;
          std::string body;
          bool too_large = false;
          reader([&](const char* data, std::size_t n) {
            if (body.size() + n > max) {
              too_large = true;
              return false;
            }
            body.append(data, n);
            return true;
          });
          if (too_large) {
            write(res, receiver.body_too_large(), true);
            return;
          }
          write(res, receiver.handle_body(body), false);
        } catch (const std::exception& e) {
          spdlog::error("webhook: {}", e.what());
          webhook::WebhookResponse r;
          r.status = 500;
          r.body = R"({"status":"error","error":"internal error"})";
          write(res, r, true);
        }
      });
}

}  // namespace mltap::api
