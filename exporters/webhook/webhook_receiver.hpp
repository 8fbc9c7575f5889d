// mltapd's Alertmanager webhook (POST /api/v1/alerts/webhook, payload version 4).
//
// Status codes (what Alertmanager does with them):
//   200 accepted (duplicates included)             delivered
//   400 malformed JSON                             not retried
//   401 no bearer token, 403 wrong token           not retried
//   413 body larger than webhook.max_body_bytes    not retried
//   415 content type is not application/json       not retried
//   422 valid JSON that breaks the contract (version, field, too many alerts, unknown reaction)
//   503 reaction queue full / mltapd stopping      retried (Retry-After: 1)
// The handler never waits for a reaction: alerts go to a core::AlertSink (the reaction engine's
// bounded queue). The HTTP route that calls it is agent/api/webhook_route.*.
// Alertmanager retries, so each alert is taken once per (fingerprint, status, startsAt).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/alert.hpp"
#include "core/config_reader.hpp"
#include "exporters/webhook/webhook_payload.hpp"

namespace mltap::webhook {

using namespace std::chrono_literals;

inline constexpr const char* kWebhookPath = "/api/v1/alerts/webhook";

struct WebhookConfig {
  bool enabled = false;                    // default: on when token_file is set
  std::string token_file;                  // bearer token, one line; not world-accessible
  std::uint64_t max_body_bytes = 1 << 20;
  PayloadLimits limits;
  std::uint32_t dedup_entries = 100000;    // idempotency keys remembered
  std::chrono::nanoseconds dedup_ttl = 24h;
};

// The `webhook:` section. Throws core::ConfigError.
WebhookConfig parse_webhook_config(core::ConfigSection section);

// Reads the bearer token: a regular file of at most 4 KiB, not readable or writable by others,
// holding one token of at least 16 characters from [A-Za-z0-9-._~+/=]; surrounding whitespace is
// ignored. Throws std::runtime_error naming the file and the problem.
std::string load_bearer_token(const std::string& path);

// A Content-Length value (RFC 9110 8.6): 1*DIGIT, surrounding blanks ignored. nullopt for
// anything else ("-1", "+5", "12abc", "", "1 2"); UINT64_MAX for digits beyond 64 bits (too
// large, not malformed).
std::optional<std::uint64_t> parse_content_length(std::string_view value) noexcept;

// Compares in time independent of where the strings differ (it depends on expected.size() only).
bool constant_time_equal(std::string_view given, std::string_view expected) noexcept;

struct WebhookResponse {
  int status = 200;
  std::string body;  // JSON
  std::vector<std::pair<std::string, std::string>> headers;
};

// Remembers which alert notifications were already taken; bounded in entries and time.
class DedupCache {
 public:
  DedupCache(std::size_t capacity, std::chrono::nanoseconds ttl) : capacity_(capacity), ttl_(ttl) {}
  // True if `key` was not taken yet (it is now); false for a duplicate.
  bool reserve(const std::string& key, std::chrono::steady_clock::time_point now);
  // Forgets a key whose alert could not be queued, so Alertmanager's retry is taken.
  void release(const std::string& key);
  std::size_t size() const;

 private:
  std::size_t capacity_;
  std::chrono::nanoseconds ttl_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> expiry_;
  std::deque<std::pair<std::string, std::chrono::steady_clock::time_point>> order_;
};

class WebhookReceiver {
 public:
  // `sink` must outlive the receiver and the routes registered with it.
  WebhookReceiver(WebhookConfig config, std::string token, core::AlertSink& sink);

  // Before reading the body: auth, content type, declared length (the Content-Length header's
  // value as sent, nullopt when absent). A response means "refuse": 400 for a Content-Length that
  // is not a decimal number ("-1", "12abc", empty), 413 for one over max_body_bytes.
  std::optional<WebhookResponse> check_request(std::string_view authorization,
                                               std::string_view content_type,
                                               std::optional<std::string_view> content_length) const;
  // With the complete body (at most max_body_bytes).
  WebhookResponse handle_body(std::string_view body);
  WebhookResponse body_too_large() const;

  const WebhookConfig& config() const noexcept { return config_; }
  // Requests answered, by status code (what mltap_webhook_requests_total shows).
  std::vector<std::pair<int, std::uint64_t>> requests_by_code() const;
  void count(int status) noexcept;
  std::uint64_t alerts_accepted() const noexcept { return alerts_accepted_.load(); }
  std::uint64_t alerts_duplicate() const noexcept { return alerts_duplicate_.load(); }

 private:
  WebhookConfig config_;
  std::string token_;
  core::AlertSink& sink_;
  DedupCache dedup_;
  static constexpr std::array<int, 10> kCodes = {200, 400, 401, 403, 404, 413, 415, 422, 500, 503};
  std::array<std::atomic<std::uint64_t>, kCodes.size()> by_code_{};
  std::atomic<std::uint64_t> alerts_accepted_{0};
  std::atomic<std::uint64_t> alerts_duplicate_{0};
};

}  // namespace mltap::webhook
