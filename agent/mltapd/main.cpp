// mltapd: the mltap host agent.
#include <malloc.h>
#include <signal.h>
#include <systemd/sd-daemon.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "core/log.hpp"

#include "agent/detectors/engine.hpp"
#include "agent/mltapd/agent.hpp"
#include "agent/mltapd/service.hpp"
#include "core/config_reader.hpp"
#include "mltap/naming.hpp"

int main(int argc, char** argv) {
  // glibc's allocator, set before any thread exists. By default every thread that allocates gets
  // an arena of its own (up to 8 per core) and the threshold above which a block is mmapped rises
  // to the largest block freed so far, so the transient memory of each round of reactions
  // (incident bundles' records and JSON, webhook bodies, /metrics pages) lands in whichever
  // arena, interleaved with long-lived blocks, and stays resident as free space the periodic
  // malloc_trim cannot give back. bench/soak/soak.py (50 streams x 1,000 rows/s, 7 minutes,
  // 2026-12-02) measured anonymous memory rising 23.7 -> 28.2 MiB from 181 to 275 s (13 arenas);
  // with 2 arenas and blocks of 64 KiB or more always mmapped (returned to the kernel when
  // freed): 18.8 -> 20.4 MiB, and 20.5 MiB instead of 26.8 at 4 minutes. The cost: threads that
  // allocate at once share two arena locks, and blocks of 64 KiB or more are an mmap each.
  ::mallopt(M_ARENA_MAX, 2);
  ::mallopt(M_MMAP_THRESHOLD, 64 * 1024);
  CLI::App app{"mltapd: observability agent for ML pipelines (reads mltap rings, exports metrics)"};
  std::string config_file, check_file, listen, ns, shm_dir, proc_dir, log_level, state_dir;
  app.add_option("-c,--config", config_file, "YAML configuration (default: embedded defaults)");
  app.add_option("--check-config", check_file, "Validate a configuration file and exit");
  app.add_option("--listen", listen, "HTTP listen address host:port (default 127.0.0.1:9645)");
  app.add_option("--namespace", ns, "Ring namespace to watch (producers: MLTAP_NAMESPACE)");
  app.add_option("--shm-dir", shm_dir, "Directory of ring segments (default /dev/shm)");
  app.add_option("--proc-dir", proc_dir, "procfs root (default /proc)");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off");
  app.add_option("--state-dir", state_dir, "Keep references and open findings here (config agent.state_dir)");
  app.add_flag_callback("--version", [] {
    std::printf("mltapd %s (ring ABI %u.%u)\n", mltap::mltapd::kVersion, mltap::format::kAbiMajor,
                mltap::format::kAbiMinor);
    std::exit(0);
  }, "Print the version and exit");
  CLI11_PARSE(app, argc, argv);

  if (!check_file.empty()) {
    try {
      const auto cfg = mltap::mltapd::load_agent_config(check_file);
      // Reference profiles named in the file are loaded too: a missing one fails the check.
      if (cfg.detectors.enabled) mltap::detectors::DetectorEngine engine(cfg.detectors);
      std::printf("%s: OK\n", check_file.c_str());
      return 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return 1;
    }
  }

  // The configuration: embedded defaults, the file, then the flags. Also what SIGHUP re-reads.
  const std::optional<std::string> file =
      config_file.empty() ? std::nullopt : std::optional<std::string>(config_file);
  auto load = [&]() {
    auto c = mltap::mltapd::load_agent_config(file);
    if (!listen.empty()) c.agent.listen = listen;
    if (!ns.empty()) c.ingest.ns = ns;
    if (!shm_dir.empty()) c.ingest.shm_dir = shm_dir;
    if (!proc_dir.empty()) c.ingest.proc_dir = proc_dir;
    if (!state_dir.empty()) c.agent.state_dir = std::filesystem::absolute(state_dir).lexically_normal();
    if (!log_level.empty()) c.agent.log_level = log_level;
    return c;
  };
  if (!listen.empty()) {
    mltap::api::ListenAddress a;
    std::string err;
    if (!mltap::api::parse_listen_address(listen, a, err)) {
      std::fprintf(stderr, "mltapd: --listen: %s\n", err.c_str());
      return 2;
    }
  }
  if (!ns.empty() && !mltap::naming::valid_namespace(ns)) {
    std::fprintf(stderr, "mltapd: --namespace '%s': must match [a-z0-9_-]{1,31}\n", ns.c_str());
    return 2;
  }
  if (!log_level.empty() && spdlog::level::from_str(log_level) == spdlog::level::off &&
      log_level != "off") {
    std::fprintf(stderr, "mltapd: --log-level '%s' is not one of trace|debug|info|warn|error|off\n",
                 log_level.c_str());
    return 2;
  }
  mltap::mltapd::AgentConfig cfg;
  try {
    cfg = load();
  } catch (const mltap::core::ConfigError& e) {
    std::fprintf(stderr, "mltapd: %s\n", e.what());
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(cfg.agent.log_level));

  // Signals are taken synchronously by the main thread; every other thread inherits the mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  mltap::mltapd::Agent agent(std::move(cfg));
  std::string error;
  if (!agent.start(error)) {
    mltap::core::log::critical("cannot start: {}", error);
    return 1;
  }
  sd_notify(0, ("READY=1\nSTATUS=" + agent.status_line()).c_str());
  mltap::mltapd::ServiceLoop(agent, load, set).run();
  agent.stop();
  return 0;
}
