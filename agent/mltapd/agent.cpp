#include "mltapd/agent.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "api/streams_json.hpp"
#include "detectors/json.hpp"
#include "detectors/profile.hpp"
#include "prometheus/detector_metrics.hpp"
#include "webhook/reaction_metrics.hpp"
#include "prometheus/ingest_metrics.hpp"

namespace mltap::agent {

Agent::Agent(AgentConfig config) : config_(std::move(config)) {}

Agent::~Agent() { stop(); }

bool Agent::start(std::string& error) {
  api::ListenAddress addr;
  if (!api::parse_listen_address(config_.agent.listen, addr, error)) return false;
  ingest_ = std::make_unique<ingest::Ingest>(config_.ingest);
  if (config_.detectors.enabled) {
    try {
      detectors_ = std::make_unique<detect::DetectorEngine>(config_.detectors);
    } catch (const std::exception& e) {  // a configured reference profile that cannot be loaded
      error = e.what();
      return false;
    }
    ingest_->add_sink(detectors_.get());
  }
  http_ = std::make_unique<api::HttpServer>(addr);
  http_->add_collectable(std::make_shared<prom::IngestCollector>(*ingest_, kVersion));
  if (detectors_) http_->add_collectable(std::make_shared<prom::DetectorCollector>(*detectors_));

  auto& srv = http_->server();
  srv.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  srv.Get("/api/v1/streams", [this](const httplib::Request& req, httplib::Response& res) {
    auto snap = req.has_param("fresh") ? ingest_->fresh_snapshot(std::chrono::milliseconds(2000))
                                       : ingest_->snapshot();
    res.set_content(api::streams_to_json(*snap).dump(), "application/json");
  });

  // Reactions act on producers only through the ingest layer's ControlPlane.
  react::SnapshotProviders providers;
  providers.detector_state = [this](const std::string& stream, const react::AlertEvent&) {
    if (!detectors_) return nlohmann::json(nullptr);
    for (const auto& st : detectors_->snapshot()->streams) {
      if (st->name == stream) return detect::to_json(*st);
    }
    return nlohmann::json(nullptr);
  };
  providers.finding = [this](const std::string& stream, const react::AlertEvent&) {
    nlohmann::json out = nlohmann::json::array();
    if (!detectors_) return out;
    for (const auto& f : detectors_->snapshot()->open_findings) {
      if (f.stream == stream) out.push_back(detect::to_json(f));
    }
    return out;
  };
  try {
    reactions_ = std::make_unique<react::ReactionEngine>(config_.reactions, *ingest_, providers);
    if (config_.webhook.enabled) {
      webhook_ = std::make_unique<webhook::WebhookReceiver>(
          config_.webhook, webhook::load_bearer_token(config_.webhook.token_file), *reactions_);
      webhook::register_webhook_routes(srv, *webhook_);
    }
    if (config_.alertmanager.enabled) {
      auto am = config_.alertmanager;
      if (am.external_url.empty()) {
        const std::string host = addr.host == "0.0.0.0" || addr.host.empty() ? "127.0.0.1" : addr.host;
        am.external_url = "http://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) +
                          ":" + std::to_string(addr.port);
      }
      pusher_ = std::make_unique<alertmanager::AlertmanagerPusher>(am, [this] { return pushable_findings(); });
      http_->add_collectable(std::make_shared<alertmanager::AlertmanagerPushCollector>(*pusher_));
    }
  } catch (const std::exception& e) {  // unusable token file, Alertmanager URL, exec path...
    error = e.what();
    return false;
  }
  http_->add_collectable(std::make_shared<webhook::ReactionCollector>(*reactions_, webhook_.get()));

  // Findings: open ones and the recently closed, newest first; one by id.
  srv.Get("/api/v1/findings", [this](const httplib::Request&, httplib::Response& res) {
    nlohmann::json open = nlohmann::json::array(), closed = nlohmann::json::array();
    if (detectors_) {
      const auto snap = detectors_->snapshot();
      for (const auto& f : snap->open_findings) open.push_back(detect::to_json(f));
      for (const auto& f : snap->closed_findings) closed.push_back(detect::to_json(f));
    }
    res.set_content(nlohmann::json{{"open", open}, {"closed", closed}}.dump(), "application/json");
  });
  srv.Get(R"(/api/v1/findings/(\d{1,19}))", [this](const httplib::Request& req, httplib::Response& res) {
    const std::uint64_t id = std::stoull(req.matches[1]);
    if (detectors_) {
      const auto snap = detectors_->snapshot();
      for (const auto* list : {&snap->open_findings, &snap->closed_findings}) {
        for (const auto& f : *list) {
          if (f.id == id) {
            res.set_content(detect::to_json(f).dump(), "application/json");
            return;
          }
        }
      }
    }
    res.status = 404;
    res.set_content(nlohmann::json{{"error", "no finding " + std::to_string(id)}}.dump(), "application/json");
  });
  // Detector state per stream and feature (scores, decisions, quality ratios).
  srv.Get("/api/v1/detectors", [this](const httplib::Request&, httplib::Response& res) {
    if (!detectors_) {
      res.set_content(R"({"enabled": false})", "application/json");
      return;
    }
    res.set_content(detect::to_json(*detectors_->snapshot()).dump(), "application/json");
  });

  ingest_->start();
  reactions_->start();
  if (!http_->start(error)) {
    reactions_->stop();
    ingest_->stop();
    return false;
  }
  if (pusher_) {
    pusher_->start();
    findings_watcher_ = std::thread([this] { watch_findings(); });
  }
  spdlog::info("mltapd {} watching namespace '{}' in {}", kVersion, config_.ingest.ns,
               config_.ingest.shm_dir);
  return true;
}

void Agent::stop() {
  if (http_) http_->stop();
  {
    std::lock_guard<std::mutex> lock(watcher_mutex_);
    stopping_ = true;
  }
  watcher_cv_.notify_all();
  if (findings_watcher_.joinable()) findings_watcher_.join();
  if (pusher_) pusher_->stop();
  if (reactions_) reactions_->stop();  // undoes flags and boosts while ingest still runs
  if (ingest_) ingest_->stop();
  if (detectors_) detectors_->publish_now();
}

std::vector<alertmanager::PushableFinding> Agent::pushable_findings() const {
  std::vector<alertmanager::PushableFinding> out;
  if (!detectors_) return out;
  for (const auto& f : detectors_->snapshot()->open_findings) out.push_back({f, {}});
  return out;
}

void Agent::watch_findings() {
  std::vector<std::uint64_t> last;
  std::unique_lock<std::mutex> lock(watcher_mutex_);
  while (!stopping_) {
    watcher_cv_.wait_for(lock, std::chrono::milliseconds(250));
    if (stopping_ || !detectors_) continue;
    std::vector<std::uint64_t> ids;
    for (const auto& f : detectors_->snapshot()->open_findings) ids.push_back(f.id);
    std::sort(ids.begin(), ids.end());
    if (ids != last) {
      last = std::move(ids);
      pusher_->notify();
    }
  }
}

int Agent::http_port() const noexcept { return http_ ? http_->bound_port() : 0; }

}  // namespace mltap::agent
