#include "exporters/alertmanager/alertmanager_pusher.hpp"

#include <sys/stat.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>

#include "core/log.hpp"

#include "core/time.hpp"

namespace mltap::alertmanager {
namespace {

using Clock = std::chrono::steady_clock;

std::string camel(std::string_view snake) {
  std::string out;
  bool up = true;
  for (char c : snake) {
    if (c == '_') {
      up = true;
      continue;
    }
    out.push_back(up ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c);
    up = false;
  }
  return out;
}

std::string fmt_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::string clip(std::string s, std::size_t max) {
  if (s.size() > max) {
    s.resize(max - 3);
    s += "...";
  }
  return s;
}

bool valid_label_name(std::string_view n) {
  if (n.empty()) return false;
  for (std::size_t i = 0; i < n.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(n[i]);
    if (!(c == '_' || std::isalpha(c) || (i > 0 && std::isdigit(c)))) return false;
  }
  return true;
}

struct UrlParts {
  std::string scheme_host_port;  // "http://host:port"
  std::string path;              // "" or "/prefix"
};

// http(s)://host[:port][/path]; no query, fragment or whitespace.
std::optional<UrlParts> split_url(const std::string& url) {
  std::size_t start = 0;
  if (url.starts_with("http://")) start = 7;
  else if (url.starts_with("https://")) start = 8;
  else return std::nullopt;
  for (char c : url) {
    if (std::isspace(static_cast<unsigned char>(c)) || c == '?' || c == '#' || static_cast<unsigned char>(c) < 0x20) {
      return std::nullopt;
    }
  }
  const std::size_t slash = url.find('/', start);
  UrlParts p;
  p.scheme_host_port = url.substr(0, slash);
  if (p.scheme_host_port.size() == start) return std::nullopt;  // no host
  if (slash != std::string::npos) p.path = url.substr(slash);
  while (!p.path.empty() && p.path.back() == '/') p.path.pop_back();
  return p;
}

std::string read_token(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error("alertmanager.bearer_token_file '" + path + "': cannot stat");
  if (st.st_mode & S_IRWXO) throw std::runtime_error("alertmanager.bearer_token_file '" + path + "': accessible by others");
  std::ifstream in(path);
  std::string token;
  std::getline(in, token);
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  if (token.empty()) throw std::runtime_error("alertmanager.bearer_token_file '" + path + "': empty");
  return token;
}

}  // namespace

std::string alert_name_for(core::FindingKind kind) {
  switch (kind) {
    case core::FindingKind::drift: return "MltapStreamDrift";
    case core::FindingKind::data_quality: return "MltapStreamDataQuality";
    case core::FindingKind::schema_change: return "MltapStreamSchemaChanged";
    case core::FindingKind::staleness: return "MltapStreamStale";
    case core::FindingKind::throughput: return "MltapStreamThroughputChange";
    case core::FindingKind::sequential_change: return "MltapStreamSequentialChange";
    case core::FindingKind::prediction_drift: return "MltapPredictionDrift";
    case core::FindingKind::embedding_drift: return "MltapEmbeddingDrift";
    case core::FindingKind::performance: return "MltapModelPerformanceDrop";
  }
  return "MltapFinding" + camel(core::finding_kind_name(kind));
}

AlertmanagerConfig parse_alertmanager_config(core::ConfigSection s) {
  AlertmanagerConfig c;
  if (auto u = s.get_string("url")) {
    if (!split_url(*u)) s.fail("url", "expected http://host:port or https://host:port[/prefix], got '" + *u + "'");
    c.url = *u;
  }
  c.enabled = !c.url.empty();
  if (auto e = s.get_bool("enabled")) c.enabled = *e;
  if (c.enabled && c.url.empty()) s.fail("enabled", "direct push needs 'url' (Alertmanager's address)");
  if (auto i = s.get_duration("interval", 1s, 1h)) c.interval = *i;
  if (auto p = s.get_duration("poll_interval", 100ms, 1min)) c.poll_interval = *p;
  if (auto t = s.get_duration("timeout", 100ms, 5min)) c.timeout = *t;
  if (c.timeout >= c.interval * 4) s.fail("timeout", "must be shorter than 4 * interval");
  if (auto x = s.get_string("external_url")) {
    if (!x->starts_with("http://") && !x->starts_with("https://")) s.fail("external_url", "must start with http:// or https://");
    c.external_url = *x;
    while (!c.external_url.empty() && c.external_url.back() == '/') c.external_url.pop_back();
  }
  if (auto labels = s.get_string_list("labels")) {
    static const std::set<std::string> reserved = {"alertname", "stream", "component", "kind", "severity", "finding_id"};
    for (const auto& l : *labels) {
      const auto eq = l.find('=');
      const std::string name = eq == std::string::npos ? l : l.substr(0, eq);
      if (eq == std::string::npos || !valid_label_name(name)) s.fail("labels", "'" + l + "' is not name=value");
      if (reserved.count(name)) s.fail("labels", "'" + name + "' is set by mltapd from the finding");
      c.labels.emplace_back(name, l.substr(eq + 1));
    }
  }
  if (auto t = s.get_string("bearer_token_file")) {
    if (t->empty() || t->front() != '/') s.fail("bearer_token_file", "must be an absolute path");
    c.bearer_token_file = *t;
  }
  if (auto m = s.get_enum("min_severity", {"info", "warning", "critical"})) {
    c.min_severity = *m == "info" ? core::Severity::info : *m == "warning" ? core::Severity::warning
                                                                            : core::Severity::critical;
  }
  if (auto m = s.get_int("max_alerts_per_post", 1, 10000)) c.max_alerts_per_post = static_cast<std::uint32_t>(*m);
  s.finish();
  return c;
}

nlohmann::json finding_to_alert(const PushableFinding& pf, const AlertmanagerConfig& config,
                                std::uint64_t ends_at_ns) {
  const core::Finding& f = pf.finding;
  nlohmann::json labels = nlohmann::json::object();
  for (const auto& [k, v] : config.labels) labels[k] = v;
  labels["alertname"] = alert_name_for(f.kind);
  labels["stream"] = f.stream;
  labels["component"] = f.component;
  labels["kind"] = std::string(core::finding_kind_name(f.kind));
  labels["severity"] = std::string(core::severity_name(f.severity));
  // As on mltap_stream_finding_active: a finding that supersedes another (a material change) is
  // a new alert for Alertmanager, not an update of the old one.
  labels["finding_id"] = std::to_string(f.id);

  std::string top_names;
  std::ostringstream top;
  for (std::size_t i = 0; i < f.top.size() && i < 5; ++i) {
    const auto& e = f.top[i];
    top_names += (i ? "," : "") + e.feature;
    top << (i ? "; " : "") << e.feature << " (" << e.method << " " << fmt_number(e.score) << " > "
        << fmt_number(e.threshold);
    if (!e.detail.empty()) top << ", " << e.detail;
    top << ")";
  }
  std::ostringstream description;
  description << "Stream " << f.stream << " (component " << f.component << "): "
              << core::finding_kind_name(f.kind);
  if (!f.reason.empty()) description << " (" << f.reason << ")";
  description << " since " << core::format_utc(f.opened_unix_ns) << " (onset about "
              << core::format_utc(f.onset_or_opened()) << (f.onset_basis.empty() ? "" : ", " + f.onset_basis)
              << ")";
  if (f.supersedes) description << ", superseding finding " << f.supersedes << " (a material change)";
  description << ", based on " << f.window_records
              << " records. Top features: " << (f.top.empty() ? std::string("not reported") : top.str()) << ".";
  std::string related, after;
  for (std::size_t i = 0; i < pf.related_events.size() && i < 5; ++i) {
    related += (i ? "\n" : "") + clip(pf.related_events[i], 300);
  }
  for (std::size_t i = 0; i < pf.after_onset_events.size() && i < 5; ++i) {
    after += (i ? "\n" : "") + clip(pf.after_onset_events[i], 300);
  }
  nlohmann::json annotations = {
      {"summary", clip(f.summary.empty() ? std::string(core::finding_kind_name(f.kind)) + " on stream " + f.stream
                                         : f.summary,
                       512)},
      {"description", clip(description.str(), 4096)},
      {"top_features", top_names},
      {"related_events", related.empty() ? std::string("none recorded") : related},
      {"onset", core::format_utc(f.onset_or_opened())},
  };
  if (!after.empty()) annotations["after_onset_events"] = after;
  if (f.supersedes) annotations["supersedes_finding_id"] = std::to_string(f.supersedes);
  nlohmann::json alert = {{"labels", labels}, {"annotations", annotations},
                          {"startsAt", core::format_utc(f.opened_unix_ns)}};
  if (!config.external_url.empty()) {
    const std::string url = config.external_url + "/api/v1/findings/" + std::to_string(f.id);
    alert["annotations"]["finding_url"] = url;
    alert["generatorURL"] = url;
  }
  if (ends_at_ns != 0) alert["endsAt"] = core::format_utc(ends_at_ns);
  return alert;
}

AlertmanagerPusher::AlertmanagerPusher(AlertmanagerConfig config, FindingsProvider provider,
                                       HttpPost post)
    : config_(std::move(config)), provider_(std::move(provider)), post_(std::move(post)) {
  const auto url = split_url(config_.url);
  if (!url) throw std::runtime_error("alertmanager.url '" + config_.url + "' is not a URL");
  scheme_host_port_ = url->scheme_host_port;
  path_ = url->path + "/api/v2/alerts";
  if (!config_.bearer_token_file.empty()) token_ = read_token(config_.bearer_token_file);
  if (!provider_) throw std::invalid_argument("alertmanager pusher needs a findings provider");
}

AlertmanagerPusher::~AlertmanagerPusher() { stop(); }

void AlertmanagerPusher::start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { run(); });
}

void AlertmanagerPusher::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void AlertmanagerPusher::notify() {
  {
    std::lock_guard lock(mu_);
    wake_ = true;
  }
  cv_.notify_all();
}

core::AlertPushCounts AlertmanagerPusher::counts() const noexcept {
  return {ok_.load(), failed_.load(), rejected_.load()};
}

std::size_t AlertmanagerPusher::tracked() const {
  std::lock_guard lock(mu_);
  return sent_size_;
}

void AlertmanagerPusher::run() {
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, config_.poll_interval, [&] { return stopping_ || wake_; });
      if (stopping_) return;
      wake_ = false;
    }
    try {
      cycle();
    } catch (const std::exception& e) {
      core::log::error("alertmanager push: {}", e.what());
    }
  }
}

void AlertmanagerPusher::cycle() {
  const auto now = Clock::now();
  if (now < retry_at_) return;
  std::vector<PushableFinding> findings;
  try {
    findings = provider_();
  } catch (const std::exception& e) {
    core::log::error("alertmanager push: findings provider failed: {}", e.what());
    return;
  }
  const std::uint64_t now_ns = core::unix_now_ns();
  const auto ends_open = now_ns + static_cast<std::uint64_t>((config_.interval * 4).count());

  // What to post: (finding id or 0, alert, resolves-the-tracked-entry).
  struct Item {
    std::uint64_t id;
    nlohmann::json alert;
    bool resolves;
    std::string labels_key;
  };
  std::vector<Item> items;
  std::set<std::uint64_t> seen;
  for (const auto& pf : findings) {
    const auto& f = pf.finding;
    if (static_cast<int>(f.severity) < static_cast<int>(config_.min_severity)) continue;
    seen.insert(f.id);
    auto it = sent_.find(f.id);
    if (!f.open()) {
      if (it == sent_.end()) continue;  // never pushed: nothing to resolve
      const std::uint64_t end = std::min<std::uint64_t>(f.closed_unix_ns, now_ns);
      items.push_back({f.id, finding_to_alert(pf, config_, end), true, it->second.labels_key});
      continue;
    }
    nlohmann::json alert = finding_to_alert(pf, config_, ends_open);
    const std::string key = alert["labels"].dump();
    if (it != sent_.end() && it->second.labels_key != key) {
      // Severity changed: the old label set is another alert in Alertmanager; resolve it.
      nlohmann::json old = it->second.alert;
      old["endsAt"] = core::format_utc(now_ns);
      items.push_back({0, std::move(old), false, {}});
    }
    if (it == sent_.end() || it->second.labels_key != key || now - it->second.last_sent >= config_.interval) {
      items.push_back({f.id, std::move(alert), false, key});
    }
  }
  for (const auto& [id, s] : sent_) {
    if (seen.count(id)) continue;
    nlohmann::json old = s.alert;  // the finding vanished from the provider: resolve it now
    old["endsAt"] = core::format_utc(now_ns);
    items.push_back({id, std::move(old), true, s.labels_key});
  }
  if (items.empty()) return;

  for (std::size_t begin = 0; begin < items.size(); begin += config_.max_alerts_per_post) {
    const std::size_t end = std::min(items.size(), begin + config_.max_alerts_per_post);
    nlohmann::json batch = nlohmann::json::array();
    for (std::size_t i = begin; i < end; ++i) batch.push_back(items[i].alert);
    if (!post(batch)) {
      ++failures_;
      const auto backoff = std::min<std::chrono::nanoseconds>(
          std::chrono::milliseconds(500) * (1u << std::min<std::uint32_t>(failures_ - 1, 10)), config_.interval);
      retry_at_ = Clock::now() + backoff;
      return;  // state unchanged: the same alerts are rebuilt and posted at the retry
    }
    failures_ = 0;
    retry_at_ = {};
    for (std::size_t i = begin; i < end; ++i) {
      auto& item = items[i];
      if (item.id == 0) continue;
      if (item.resolves) {
        sent_.erase(item.id);
      } else {
        sent_[item.id] = Sent{item.labels_key, item.alert, now};
      }
    }
  }
  std::lock_guard lock(mu_);
  sent_size_ = sent_.size();
}

bool AlertmanagerPusher::post(const nlohmann::json& alerts) {
  std::vector<std::pair<std::string, std::string>> headers;
  if (!token_.empty()) headers.emplace_back("Authorization", "Bearer " + token_);
  const std::string body = alerts.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  const HttpReply reply = post_(scheme_host_port_, path_, headers, body, config_.timeout);
  if (reply.status == 0) {
    failed_.fetch_add(1);
    core::log::warn("alertmanager push to {}{}: {}", scheme_host_port_, path_, reply.error);
    return false;
  }
  if (reply.status >= 200 && reply.status < 300) {
    ok_.fetch_add(1);
    return true;
  }
  if (reply.status >= 400 && reply.status < 500) {
    rejected_.fetch_add(1);
    core::log::error("alertmanager push: {} refused {} alerts ({}): {}", scheme_host_port_, alerts.size(), reply.status,
                  clip(reply.body, 512));
    return false;
  }
  failed_.fetch_add(1);
  core::log::warn("alertmanager push: {} answered {}", scheme_host_port_, reply.status);
  return false;
}

}  // namespace mltap::alertmanager
