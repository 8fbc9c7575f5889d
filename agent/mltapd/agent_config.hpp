// mltapd's whole configuration: embedded defaults, then the YAML file, then command-line flags.
// Each section belongs to one component and is parsed by it; unknown keys anywhere are errors.
#pragma once

#include <optional>
#include <string>

#include "alertmanager/alertmanager_pusher.hpp"
#include "detectors/config.hpp"
#include "reactions/reaction_config.hpp"
#include "webhook/webhook_receiver.hpp"
#include "ingest/ingest.hpp"
#include "mltap/ebpf/config.hpp"

namespace mltap::agent {

struct AgentSettings {
  std::string listen = "127.0.0.1:9645";
  std::string log_level = "info";
  // Once everything is started, drop every capability but these (and what the tracer still
  // needs): reading and removing other users' rings, signalling their producers.
  bool drop_capabilities = true;
  std::vector<std::string> keep_capabilities = {"CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL"};
};

struct AgentConfig {
  AgentSettings agent;
  ingest::IngestConfig ingest;
  detect::EngineConfig detectors;
  react::ReactionsConfig reactions;
  webhook::WebhookConfig webhook;
  alertmanager::AlertmanagerConfig alertmanager;
  ebpf::TracerConfig ebpf;
  std::string source = "<embedded defaults>";
};

// Parses `file` over the embedded defaults. Throws config::ConfigError (file:line:col: what).
AgentConfig load_agent_config(const std::optional<std::string>& file);
// Parses YAML text (tests).
AgentConfig parse_agent_config_text(const std::string& text, const std::string& name);

}  // namespace mltap::agent
