// mltapd's whole configuration: embedded defaults, then the YAML file, then command-line flags.
// Each section belongs to one component and is parsed by it; unknown keys anywhere are errors.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>

#include "agent/detectors/config.hpp"
#include "agent/ingest/ingest.hpp"
#include "agent/performance/config.hpp"
#include "agent/reactions/reaction_config.hpp"
#include "agent/retention/config.hpp"
#include "bpf/config.hpp"
#include "exporters/alertmanager/alertmanager_pusher.hpp"
#include "exporters/webhook/webhook_receiver.hpp"

namespace mltap::mltapd {

struct AgentSettings {
  std::string listen = "127.0.0.1:9645";
  // Bearer token of the read API (/api/v1/ but the webhook); docs/http.md. Unset: the read API
  // is open on a loopback listen address and refused on any other.
  std::string api_token_file;
  // On a loopback listen address, the local users (names or uids) who may read the API without
  // the token; empty: every local user.
  std::vector<std::string> api_allowed_users;
  std::string log_level = "info";
  // Once everything is started, drop every capability but these (and what the tracer still
  // needs): reading and removing other users' rings, signalling their producers.
  bool drop_capabilities = true;
  std::vector<std::string> keep_capabilities = {"CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL",
                                                 "CAP_SYS_PTRACE"};
  // Where pinned references and open findings are kept across restarts (docs/deploy.md). Empty:
  // nothing is kept, so that a mltapd started by hand, the demo or a test never writes to
  // /var/lib behind its user's back; the packaged /etc/mltap/mltapd.yaml sets /var/lib/mltap.
  std::string state_dir;
  std::chrono::nanoseconds checkpoint_interval = std::chrono::seconds(2);

  bool operator==(const AgentSettings&) const = default;
};

struct AgentConfig {
  AgentSettings agent;
  ingest::IngestConfig ingest;
  detectors::EngineConfig detectors;
  reactions::ReactionsConfig reactions;
  webhook::WebhookConfig webhook;
  alertmanager::AlertmanagerConfig alertmanager;
  bpf::TracerConfig ebpf;
  performance::PerformanceConfig performance;
  retention::RetentionConfig retention;
  std::string source = "<embedded defaults>";
  // Each top-level section as written in the file (core::ConfigDocument::section_text): what a
  // reload compares to tell which settings changed. Empty for an absent section.
  std::map<std::string, std::string> sections;
};

// The top-level sections, in the order of the file's documentation.
inline constexpr const char* kConfigSections[] = {"agent",   "ingest",       "detectors", "reactions",
                                                  "webhook", "alertmanager", "ebpf", "performance", "retention"};

// Parses `file` over the embedded defaults. Throws core::ConfigError (file:line:col: what).
AgentConfig load_agent_config(const std::optional<std::string>& file);
// Parses YAML text (tests).
AgentConfig parse_agent_config_text(const std::string& text, const std::string& name);

}  // namespace mltap::mltapd
