#include "exporters/webhook/webhook_receiver.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <limits>
#include <cstring>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include "core/log.hpp"

namespace mltap::webhook {
namespace {

using Clock = std::chrono::steady_clock;

WebhookResponse error_response(int status, std::string message) {
  WebhookResponse r;
  r.status = status;
  r.body = nlohmann::json{{"status", "error"}, {"error", std::move(message)}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
  return r;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

bool token_char(char c) {
  const unsigned char u = static_cast<unsigned char>(c);
  return std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '=';
}

}  // namespace

WebhookConfig parse_webhook_config(core::ConfigSection s) {
  WebhookConfig c;
  if (auto t = s.get_string("token_file")) {
    if (t->empty() || t->front() != '/') s.fail("token_file", "must be an absolute path");
    c.token_file = *t;
  }
  c.enabled = !c.token_file.empty();
  if (auto e = s.get_bool("enabled")) c.enabled = *e;
  if (c.enabled && c.token_file.empty()) {
    s.fail("enabled", "the webhook needs 'token_file' (a bearer token Alertmanager also uses)");
  }
  if (auto b = s.get_bytes("max_body_bytes", 1024, 64ull << 20)) c.max_body_bytes = *b;
  if (auto m = s.get_int("max_alerts", 1, 100000)) c.limits.max_alerts = static_cast<std::size_t>(*m);
  if (auto m = s.get_int("max_labels", 1, 1024)) c.limits.max_labels = static_cast<std::size_t>(*m);
  if (auto m = s.get_bytes("max_label_value_bytes", 16, 1 << 20)) c.limits.max_label_value_bytes = *m;
  if (auto m = s.get_bytes("max_annotation_value_bytes", 16, 1 << 20)) c.limits.max_annotation_value_bytes = *m;
  if (auto d = s.get_int("dedup_entries", 16, 10'000'000)) c.dedup_entries = static_cast<std::uint32_t>(*d);
  if (auto t = s.get_duration("dedup_ttl", 1s, 30 * 24h)) c.dedup_ttl = *t;
  s.finish();
  return c;
}

std::string load_bearer_token(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) throw std::runtime_error("webhook token file '" + path + "': " + std::strerror(errno));
  struct stat st {};
  std::string content;
  std::string problem;
  if (::fstat(fd, &st) != 0) {
    problem = std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    problem = "not a regular file";
  } else if (st.st_mode & (S_IRWXO | S_IWGRP)) {
    problem = "readable or writable by others (or writable by group): chmod 0600 or 0640";
  } else if (st.st_size > 4096) {
    problem = "larger than 4 KiB";
  } else {
    content.resize(static_cast<std::size_t>(st.st_size));
    const ssize_t n = ::read(fd, content.data(), content.size());
    if (n < 0) problem = std::strerror(errno);
    else content.resize(static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (!problem.empty()) throw std::runtime_error("webhook token file '" + path + "': " + problem);
  const std::string token(trim(content));
  if (token.size() < 16) throw std::runtime_error("webhook token file '" + path + "': token shorter than 16 characters");
  for (char c : token) {
    if (!token_char(c)) {
      throw std::runtime_error("webhook token file '" + path + "': token may only hold A-Z a-z 0-9 - . _ ~ + / =");
    }
  }
  return token;
}

bool constant_time_equal(std::string_view given, std::string_view expected) noexcept {
  volatile unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff = static_cast<unsigned char>(diff | (g ^ static_cast<unsigned char>(expected[i])));
  }
  return diff == 0;
}

bool DedupCache::reserve(const std::string& key, Clock::time_point now) {
  std::lock_guard lock(mu_);
  auto it = expiry_.find(key);
  if (it != expiry_.end() && it->second > now) return false;
  // Evict expired entries from the front, then the oldest ones beyond capacity.
  while (!order_.empty() && (order_.front().second <= now || expiry_.size() >= capacity_)) {
    auto& [k, exp] = order_.front();
    auto e = expiry_.find(k);
    if (e != expiry_.end() && e->second == exp) expiry_.erase(e);
    order_.pop_front();
  }
  const auto exp = now + ttl_;
  expiry_[key] = exp;
  order_.emplace_back(key, exp);
  return true;
}

void DedupCache::release(const std::string& key) {
  std::lock_guard lock(mu_);
  expiry_.erase(key);  // its order_ entry no longer matches and is skipped on eviction
}

std::size_t DedupCache::size() const {
  std::lock_guard lock(mu_);
  return expiry_.size();
}

WebhookReceiver::WebhookReceiver(WebhookConfig config, std::string token, core::AlertSink& sink)
    : config_(std::move(config)),
      token_(std::move(token)),
      sink_(sink),
      dedup_(config_.dedup_entries, config_.dedup_ttl) {
  if (token_.empty()) throw std::invalid_argument("webhook receiver needs a bearer token");
}

void WebhookReceiver::count(int status) noexcept {
  for (std::size_t i = 0; i < kCodes.size(); ++i) {
    if (kCodes[i] == status) {
      by_code_[i].fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  by_code_[kCodes.size() - 2].fetch_add(1, std::memory_order_relaxed);  // counted as 500
}

std::vector<std::pair<int, std::uint64_t>> WebhookReceiver::requests_by_code() const {
  std::vector<std::pair<int, std::uint64_t>> out;
  for (std::size_t i = 0; i < kCodes.size(); ++i) out.emplace_back(kCodes[i], by_code_[i].load(std::memory_order_relaxed));
  return out;
}

std::optional<std::uint64_t> parse_content_length(std::string_view value) noexcept {
  const std::string_view v = trim(value);
  if (v.empty()) return std::nullopt;
  for (char c : v) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  std::uint64_t n = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n, 10);
  if (ec == std::errc::result_out_of_range) return std::numeric_limits<std::uint64_t>::max();
  if (ec != std::errc{} || end != v.data() + v.size()) return std::nullopt;
  return n;
}

std::optional<WebhookResponse> WebhookReceiver::check_request(std::string_view authorization,
                                                              std::string_view content_type,
                                                              std::optional<std::string_view> content_length) const {
  const std::string_view auth = trim(authorization);
  const auto space = auth.find(' ');
  if (auth.empty() || space == std::string_view::npos || !iequals(auth.substr(0, space), "Bearer")) {
    auto r = error_response(401, "bearer token required");
    r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"mltapd\"");
    return r;
  }
  if (!constant_time_equal(trim(auth.substr(space + 1)), token_)) {
    return error_response(403, "wrong bearer token");
  }
  const std::string_view media = trim(content_type.substr(0, content_type.find(';')));
  if (!iequals(media, "application/json")) {
    return error_response(415, "content type must be application/json");
  }
  if (content_length) {
    const auto length = parse_content_length(*content_length);
    if (!length) return error_response(400, "Content-Length is not a decimal number");
    if (*length > config_.max_body_bytes) return body_too_large();
  }
  return std::nullopt;
}

WebhookResponse WebhookReceiver::body_too_large() const {
  return error_response(413, "body larger than " + std::to_string(config_.max_body_bytes) + " bytes");
}

WebhookResponse WebhookReceiver::handle_body(std::string_view body) {
  if (body.size() > config_.max_body_bytes) return body_too_large();
  ParseResult parsed = parse_webhook_payload(body, config_.limits);
  if (!parsed.payload) {
    const int status = parsed.error == PayloadError::syntax ? 400 : 422;
    core::log::warn("webhook: refused payload ({}): {}", status, parsed.message);
    return error_response(status, parsed.message);
  }
  WebhookPayload& p = *parsed.payload;
  const auto now = Clock::now();

  // Build every event first so that an unknown reaction refuses the whole request (nothing queued).
  std::vector<core::AlertEvent> events;
  events.reserve(p.alerts.size());
  std::vector<std::string> keys;
  keys.reserve(p.alerts.size());
  for (auto& a : p.alerts) {
    core::AlertEvent e;
    e.fingerprint = a.fingerprint;
    e.status = a.status;
    e.labels = std::move(a.labels);
    e.annotations = std::move(a.annotations);
    e.starts_at = a.starts_at;
    e.ends_at = a.ends_at;
    e.generator_url = std::move(a.generator_url);
    e.receiver = p.receiver;
    e.received = now;
    if (auto unknown = sink_.unknown_requested(e); !unknown.empty()) {
      std::string names;
      for (const auto& n : unknown) names += (names.empty() ? "" : ", ") + n.substr(0, 64);
      const std::string msg = "alert " + e.fingerprint + " asks for unknown reaction(s): " + names;
      sink_.audit_rejected(e, "unknown_reaction", msg);
      core::log::warn("webhook: {}", msg);
      return error_response(422, msg);
    }
    keys.push_back(a.fingerprint + "|" + std::string(core::alert_status_name(a.status)) + "|" +
                   std::to_string(a.starts_at_unix_ns));
    events.push_back(std::move(e));
  }

  // Firing alerts first: when one notification resolves a finding and fires the one that
  // superseded it (a material change, docs/alerting.md), the new alert joins the reversible
  // reactions the old one holds before the old one lets them go, instead of undoing them and
  // then meeting their cooldown.
  std::vector<std::size_t> order(events.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_partition(order.begin(), order.end(),
                        [&](std::size_t i) { return events[i].status == core::AlertStatus::firing; });
  std::size_t accepted = 0, duplicates = 0;
  for (std::size_t i : order) {
    if (!dedup_.reserve(keys[i], now)) {
      ++duplicates;
      continue;
    }
    const auto submitted = sink_.submit(std::move(events[i]));
    if (submitted != core::AlertSink::Submit::accepted) {
      dedup_.release(keys[i]);
      alerts_accepted_.fetch_add(accepted);
      alerts_duplicate_.fetch_add(duplicates);
      const bool full = submitted == core::AlertSink::Submit::queue_full;
      auto r = error_response(503, full ? "reaction queue full; " + std::to_string(accepted) +
                                              " alerts of this request were queued, retry for the rest"
                                        : "mltapd is stopping");
      r.headers.emplace_back("Retry-After", "1");
      return r;
    }
    ++accepted;
  }
  alerts_accepted_.fetch_add(accepted);
  alerts_duplicate_.fetch_add(duplicates);
  WebhookResponse r;
  r.body = nlohmann::json{{"status", "success"}, {"accepted", accepted}, {"duplicates", duplicates}}.dump();
  return r;
}

}  // namespace mltap::webhook
