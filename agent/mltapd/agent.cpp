#include "mltapd/agent.hpp"

#include <spdlog/spdlog.h>

#include "api/streams_json.hpp"
#include "detectors/json.hpp"
#include "detectors/profile.hpp"
#include "prometheus/detector_metrics.hpp"
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
  if (!http_->start(error)) {
    ingest_->stop();
    return false;
  }
  spdlog::info("mltapd {} watching namespace '{}' in {}", kVersion, config_.ingest.ns,
               config_.ingest.shm_dir);
  return true;
}

void Agent::stop() {
  if (http_) http_->stop();
  if (ingest_) ingest_->stop();
  if (detectors_) detectors_->publish_now();
}

int Agent::http_port() const noexcept { return http_ ? http_->bound_port() : 0; }

}  // namespace mltap::agent
