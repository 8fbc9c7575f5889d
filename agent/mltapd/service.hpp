// mltapd's conversation with its service manager, on the main thread once the agent has started:
// signals taken synchronously (SIGTERM/SIGINT stop, SIGHUP reloads), READY/RELOADING/STOPPING,
// WATCHDOG=1 while the ingest loop makes progress, STATUS= with what the agent sees. Without
// systemd (no NOTIFY_SOCKET) the sd_notify calls do nothing and the loop just waits for signals.
#pragma once

#include <signal.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "agent/mltapd/agent.hpp"

namespace mltap::mltapd {

// Re-reads the configuration for a reload: the file given at start with the command line's
// flags applied again. Throws core::ConfigError (file:line:column) for a configuration that
// cannot be used.
using ConfigLoader = std::function<AgentConfig()>;

class ServiceLoop {
 public:
  // `signals` must already be blocked in every thread (main() blocks them before any starts).
  ServiceLoop(Agent& agent, ConfigLoader load, const sigset_t& signals);
  // Until SIGTERM or SIGINT; returns the signal.
  int run();

 private:
  void reload();
  void tick(std::chrono::steady_clock::time_point now);

  Agent& agent_;
  ConfigLoader load_;
  sigset_t signals_;
  std::optional<std::chrono::microseconds> watchdog_;  // WatchdogSec, when systemd asks for pings
  std::uint64_t last_progress_ = 0;
  std::chrono::steady_clock::time_point progress_at_{};
  bool stalled_logged_ = false;
  std::string last_status_;
  std::string reload_note_;  // kept in STATUS= after a refused reload
};

}  // namespace mltap::mltapd
