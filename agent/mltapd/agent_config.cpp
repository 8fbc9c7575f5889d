#include "agent/mltapd/agent_config.hpp"

#include <cctype>

#include "agent/api/listen_address.hpp"
#include "core/config_reader.hpp"

namespace mltap::mltapd {
namespace {

void parse_agent_section(core::ConfigSection& s, AgentSettings& a) {
  if (auto v = s.get_string("listen")) {
    api::ListenAddress addr;
    std::string err;
    if (!api::parse_listen_address(*v, addr, err)) s.fail("listen", err);
    a.listen = *v;
  }
  if (auto v = s.get_string("api_token_file")) {
    if (v->empty() || v->front() != '/') s.fail("api_token_file", "must be an absolute path");
    a.api_token_file = *v;
  }
  if (auto v = s.get_string_list("api_allowed_users")) {
    for (const auto& u : *v) {
      if (u.empty() || u.size() > 32 ||
          u.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != std::string::npos) {
        s.fail("api_allowed_users", "'" + u + "' is not a user name or uid");
      }
    }
    a.api_allowed_users = *v;
  }
  if (auto v = s.get_enum("log_level", {"trace", "debug", "info", "warn", "error", "off"})) {
    a.log_level = *v;
  }
  if (auto v = s.get_bool("drop_capabilities")) a.drop_capabilities = *v;
  if (auto v = s.get_string_list("keep_capabilities")) {
    for (const auto& c : *v) {
      std::string lower;
      for (char ch : c) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (lower.rfind("cap_", 0) != 0 || lower.size() < 5 || lower.size() > 32 ||
          lower.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") != std::string::npos) {
        s.fail("keep_capabilities", "'" + c + "' is not a capability name like CAP_KILL");
      }
    }
    a.keep_capabilities = *v;
  }
  if (auto v = s.get_string("state_dir")) {
    if (!v->empty() && (*v)[0] != '/') {
      s.fail("state_dir", "'" + *v + "' must be an absolute path (or \"\": keep no state)");
    }
    a.state_dir = *v;
  }
  if (auto v = s.get_duration("checkpoint_interval", std::chrono::milliseconds(100),
                              std::chrono::hours(1))) {
    a.checkpoint_interval = *v;
  }
  s.finish();
}

AgentConfig parse(const core::ConfigDocument& root, const std::string& name) {
  AgentConfig c;
  c.source = name;
  core::ConfigSection top(root, name, "");
  auto agent = top.child("agent");
  parse_agent_section(agent, c.agent);
  auto ingest = top.child("ingest");
  ingest::parse_ingest_config(ingest, c.ingest);
  auto detectors = top.child("detectors");
  c.detectors = detectors::parse_engine_config(detectors);
  c.reactions = reactions::parse_reactions_config(top.child("reactions"));
  c.webhook = webhook::parse_webhook_config(top.child("webhook"));
  c.alertmanager = alertmanager::parse_alertmanager_config(top.child("alertmanager"));
  auto ebpf = top.child("ebpf");
  c.ebpf = bpf::parse_tracer_config(ebpf);
  c.performance = performance::parse_performance_config(top.child("performance"));
  c.retention = retention::parse_retention_config(top.child("retention"));
  top.finish();
  for (const char* name : kConfigSections) c.sections[name] = root.section_text(name);
  return c;
}

}  // namespace

AgentConfig load_agent_config(const std::optional<std::string>& file) {
  if (!file) return AgentConfig{};
  return parse(core::load_file(*file), *file);
}

AgentConfig parse_agent_config_text(const std::string& text, const std::string& name) {
  return parse(core::load_text(text, name), name);
}

}  // namespace mltap::mltapd
