// Fuzz target: mltapd's configuration, from YAML text to AgentConfig: core/config_reader (YAML
// through yaml-cpp, typed getters, durations, byte sizes, unknown-key detection) and every
// section parser mltapd runs (agent, ingest, detectors, reactions, webhook, alertmanager, ebpf),
// through the same entry point as `mltapd --config` (parse_agent_config_text).
//
// Property: the only way a configuration is refused is core::ConfigError, whose message names
// the file and a line:column (docs: "strict config errors with file:line:column"). Any other
// exception escaping, or a crash, is a finding.
#include <string>

#include "agent/mltapd/agent_config.hpp"
#include "core/config_reader.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string name = "fuzz.yaml";
  try {
    auto c = mltap::mltapd::parse_agent_config_text(text, name);
    (void)c;
  } catch (const mltap::core::ConfigError& e) {
    const std::string what = e.what();
    FUZZ_CHECK(what.rfind(name, 0) == 0, "config error not naming the file: %s", what.c_str());
    FUZZ_CHECK(e.line() >= 0 && e.column() >= 0, "negative location: %s", what.c_str());
  } catch (const std::exception& e) {
    FUZZ_CHECK(false, "configuration refused by %s instead of ConfigError: %s", typeid(e).name(), e.what());
  }
  // The scalar parsers on their own (they also back CLI flags).
  if (size <= 64) {
    (void)mltap::core::parse_duration(text);
    (void)mltap::core::parse_bytes(text);
  }
  return 0;
}
