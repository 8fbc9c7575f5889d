// The `mltap explain` subcommand's options (run_explain, in explain.cpp, fetches and prints).
#include <CLI/CLI.hpp>

#include <iostream>
#include <memory>

#include "agent/cli/agent_client.hpp"
#include "agent/cli/explain.hpp"

namespace mltap::cli {

void add_explain_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ExplainArgs>();
  args->agent_url = default_agent_url();
  CLI::App* cmd = app.add_subcommand(
      "explain", "What else happened around a stream's findings: its producers' system events");
  cmd->add_option("stream", args->stream, "stream name")->required();
  cmd->add_option("--agent", args->agent_url, "mltapd URL (default $MLTAP_AGENT or http://127.0.0.1:9645)");
  cmd->add_option("--since", args->since, "timeline length, e.g. 30m, 2h (default 1h)");
  cmd->add_flag("--json", args->json, "print the API response as JSON");
  cmd->callback([args, &exit_code] { exit_code = run_explain(*args, std::cout, std::cerr); });
}

}  // namespace mltap::cli
