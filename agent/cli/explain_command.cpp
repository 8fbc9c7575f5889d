// The `mltap explain` subcommand: fetches GET /api/v1/events and prints it (agent/cli/explain.*).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <iostream>

#include "agent/api/events_api.hpp"
#include "agent/cli/agent_client.hpp"
#include "agent/cli/explain.hpp"
#include "core/config_reader.hpp"

namespace mltap::cli {

int run_explain(const ExplainArgs& args, std::ostream& out, std::ostream& err) {
  if (!api::valid_stream_name(args.stream)) {
    err << "mltap explain: STREAM must be 1..256 printable characters\n";
    return 2;
  }
  const auto since = core::parse_duration(args.since);
  if (!since || since->count() <= 0) {
    err << "mltap explain: --since must be a duration such as 30m or 2h (got '" << args.since << "')\n";
    return 2;
  }
  std::string error;
  const std::string path = "/api/v1/events?stream=" + percent_encode(args.stream) +
                           "&since=" + percent_encode(args.since);
  auto body = get_json(args.agent_url, path, error);
  if (!body) {
    err << "mltap explain: " << error << "\n";
    return 1;
  }
  if (args.json) {
    out << body->dump(2) << "\n";
    return 0;
  }
  try {
    out << format_explain(parse_explain_report(*body));
  } catch (const std::exception& e) {
    err << "mltap explain: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

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
