#include "mltapd/agent.hpp"

#include <spdlog/spdlog.h>

#include "api/streams_json.hpp"
#include "prometheus/ingest_metrics.hpp"

namespace mltap::agent {

Agent::Agent(AgentConfig config) : config_(std::move(config)) {}

Agent::~Agent() { stop(); }

bool Agent::start(std::string& error) {
  api::ListenAddress addr;
  if (!api::parse_listen_address(config_.agent.listen, addr, error)) return false;
  ingest_ = std::make_unique<ingest::Ingest>(config_.ingest);
  http_ = std::make_unique<api::HttpServer>(addr);
  http_->add_collectable(std::make_shared<prom::IngestCollector>(*ingest_, kVersion));

  auto& srv = http_->server();
  srv.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  srv.Get("/api/v1/streams", [this](const httplib::Request& req, httplib::Response& res) {
    auto snap = req.has_param("fresh") ? ingest_->fresh_snapshot(std::chrono::milliseconds(2000))
                                       : ingest_->snapshot();
    res.set_content(api::streams_to_json(*snap).dump(), "application/json");
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
}

int Agent::http_port() const noexcept { return http_ ? http_->bound_port() : 0; }

}  // namespace mltap::agent
