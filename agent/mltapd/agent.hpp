// mltapd assembled: ingest -> sinks (detectors) -> exporters, with the HTTP API in front.
#pragma once

#include <memory>
#include <string>

#include "api/http_server.hpp"
#include "detectors/engine.hpp"
#include "ingest/ingest.hpp"
#include "mltapd/agent_config.hpp"

namespace mltap::agent {

inline constexpr const char* kVersion = "0.1.0";

class Agent {
 public:
  explicit Agent(AgentConfig config);
  ~Agent();
  // Starts every component; false with `error` when the agent cannot serve (e.g. port in use).
  bool start(std::string& error);
  void stop();
  int http_port() const noexcept;

 private:
  AgentConfig config_;
  std::unique_ptr<ingest::Ingest> ingest_;
  std::unique_ptr<detect::DetectorEngine> detectors_;
  std::unique_ptr<api::HttpServer> http_;
};

}  // namespace mltap::agent
