// mltap_ebpf_probe: starts the tracer with a configuration (default: all probes, file_syscalls
// too) and prints which probes run, how, and why not, as JSON. Used by the capability tests
// (run under capsh) and as a diagnostic on a new host.
//   mltap_ebpf_probe [CONFIG.yaml]     (the file's `ebpf:` section is used)
//   SPDLOG_LEVEL=debug mltap_ebpf_probe  also prints libbpf's and the verifier's messages
#include <nlohmann/json.hpp>
#include <spdlog/cfg/env.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>

#include "bpf/capabilities.hpp"
#include "bpf/tracer.hpp"
#include "core/config_reader.hpp"

int main(int argc, char** argv) {
  using namespace mltap;
  spdlog::set_default_logger(spdlog::stderr_color_mt("probe"));
  spdlog::cfg::load_env_levels();  // SPDLOG_LEVEL=debug shows libbpf's messages
  bpf::TracerConfig cfg;
  cfg.probes[static_cast<std::size_t>(bpf::Probe::file_syscalls)] = true;
  try {
    if (argc > 2) {
      std::cerr << "usage: mltap_ebpf_probe [CONFIG.yaml]\n";
      return 2;
    }
    if (argc == 2) {
      auto root = core::load_file(argv[1]);
      core::ConfigSection top(root, argv[1], "");
      auto sec = top.child("ebpf");
      cfg = bpf::parse_tracer_config(sec);
    }
  } catch (const std::exception& e) {
    std::cerr << "mltap_ebpf_probe: " << e.what() << "\n";
    return 2;
  }
  nlohmann::json out;
  out["capabilities_before"] = bpf::effective_capabilities();
  bpf::Tracer tracer(cfg);
  tracer.start([](const core::SystemEvent&) {});
  for (const auto& p : tracer.probe_status()) {
    out["probes"].push_back({{"probe", p.probe}, {"up", p.up}, {"method", p.method}, {"reason", p.reason}});
  }
  out["capabilities_needed_after_start"] = tracer.capabilities_needed_after_start();
  tracer.stop();
  std::cout << out.dump(2) << std::endl;
  return 0;
}
