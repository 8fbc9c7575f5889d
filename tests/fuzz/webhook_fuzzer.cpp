// Fuzz target: mltapd's Alertmanager webhook, as agent/api/webhook_route.cpp drives it: the
// Content-Length header parsed as the route does, WebhookReceiver::check_request (token,
// content type, declared length) and handle_body (parse_webhook_payload: strict v4 payload,
// RFC 3339 times, limits; deduplication; hand-off to the alert sink).
//
// Input: one byte of header choices, then the body. Properties: every answer has one of the
// documented status codes and a JSON body; no exception escapes handle_body (the route would
// turn it into a 500 "internal error", which is a finding too); an accepted request handed the
// sink alerts that carry a fingerprint, a valid status and times the parser accepted.
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>
#include <string>

#include "exporters/webhook/webhook_payload.hpp"
#include "exporters/webhook/webhook_receiver.hpp"
#include "fuzz_support.hpp"

using namespace mltap;

namespace {

// The reaction engine's queue, reduced to what the receiver sees of it.
class Sink : public core::AlertSink {
 public:
  bool full = false;
  std::size_t taken = 0;
  Submit submit(core::AlertEvent alert) override {
    FUZZ_CHECK(!alert.fingerprint.empty(), "alert without fingerprint reached the sink");
    FUZZ_CHECK(webhook::parse_rfc3339_ns(alert.starts_at).has_value(), "unparsed startsAt reached the sink");
    if (full) return Submit::queue_full;
    ++taken;
    return Submit::accepted;
  }
  std::vector<std::string> unknown_requested(const core::AlertEvent& alert) const override {
    std::vector<std::string> unknown;
    const std::string req = alert.label("mltap_reaction");
    std::size_t start = 0;
    while (start <= req.size() && !req.empty()) {
      const std::size_t end = std::min(req.find(',', start), req.size());
      const std::string name = req.substr(start, end - start);
      if (name != "pause_canary" && name != "log") unknown.push_back(name);
      start = end + 1;
    }
    return unknown;
  }
  void audit_rejected(const core::AlertEvent&, const std::string&, const std::string&) override {}
};

constexpr const char* kToken = "fuzz-token-0123456789abcdef";

void check_response(const webhook::WebhookResponse& r) {
  static const int codes[] = {200, 400, 401, 403, 404, 413, 415, 422, 500, 503};
  FUZZ_CHECK(std::find(std::begin(codes), std::end(codes), r.status) != std::end(codes), "status %d", r.status);
  FUZZ_CHECK(r.status != 500, "internal error answering a webhook: %s", r.body.c_str());
  FUZZ_CHECK(nlohmann::json::accept(r.body), "body is not JSON: %s", r.body.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);  // the receiver warns per refused alert
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t flags = data[0];
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);

  webhook::WebhookConfig config;
  config.enabled = true;
  config.max_body_bytes = 1 << 20;
  config.limits.max_alerts = 16;  // small limits so the fuzzer reaches them
  config.limits.max_labels = 8;
  config.limits.max_label_value_bytes = 64;
  config.limits.max_annotation_value_bytes = 128;
  config.limits.max_string_bytes = 256;
  config.dedup_entries = 8;
  Sink sink;
  sink.full = flags & 0x40;
  webhook::WebhookReceiver receiver(config, kToken, sink);

  std::string authorization;
  switch (flags & 3) {
    case 0: authorization = std::string("Bearer ") + kToken; break;
    case 1: authorization = "Bearer wrong-token-0123456789abcd"; break;
    case 2: break;
    default: authorization = std::string(body.substr(0, 48)); break;
  }
  std::string content_type;
  switch ((flags >> 2) & 3) {
    case 0: content_type = "application/json"; break;
    case 1: content_type = "application/json; charset=utf-8"; break;
    case 2: content_type = "text/plain"; break;
    default: content_type = std::string(body.substr(0, 32)); break;
  }
  // Content-Length as webhook_route.cpp passes it: the header's text, parsed by the receiver.
  std::string length_header;
  switch ((flags >> 4) & 3) {
    case 0: length_header = std::to_string(body.size()); break;
    case 1: break;  // absent (chunked)
    case 2: length_header = "18446744073709551615"; break;
    default: length_header = std::string(body.substr(0, 24)); break;
  }
  std::optional<std::string_view> length;
  if ((flags >> 4 & 3) != 1) length = length_header;
  if (auto refused = receiver.check_request(authorization, content_type, length)) {
    check_response(*refused);
    FUZZ_CHECK(refused->status != 200, "a refusal answered 200");
    return 0;
  }
  FUZZ_CHECK(authorization == std::string("Bearer ") + kToken, "a request without the token was let in");
  if (body.size() > config.max_body_bytes) return 0;  // the route stops reading (413)
  for (int round = 0; round < 2; ++round) {  // the second is Alertmanager's retry: duplicates
    webhook::WebhookResponse r;
    try {
      r = receiver.handle_body(body);
    } catch (const std::exception& e) {
      FUZZ_CHECK(false, "handle_body threw %s", e.what());
    }
    check_response(r);
  }
  // The parser alone, with the default (production) limits.
  auto parsed = webhook::parse_webhook_payload(body, webhook::PayloadLimits{});
  FUZZ_CHECK(parsed.payload.has_value() == (parsed.error == webhook::PayloadError::none), "result and error disagree");
  if (!parsed.payload) FUZZ_CHECK(!parsed.message.empty(), "refusal without message");
  return 0;
}
