#include "agent/cli/performance_command.hpp"

#include <cstdio>
#include <iostream>
#include <memory>

#include "agent/cli/agent_client.hpp"
#include "agent/cli/performance_output.hpp"
#include "core/config_reader.hpp"

namespace mltap::cli {
namespace {

struct PerformanceArgs {
  std::string stream;
  std::string agent = default_agent_url();
  bool json = false;
  std::string since = "7d";
  std::string slice;  // only this slice's rows under each window ("" = every slice)
};

}  // namespace

void add_performance_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "performance", "Realized model performance of a predictions stream per prediction-time window, and "
      "label-free estimates beside it");
  auto args = std::make_shared<PerformanceArgs>();
  cmd->add_option("stream", args->stream, "The predictions stream")->required();
  cmd->add_option("--agent", args->agent, "mltapd URL (default $MLTAP_AGENT or http://127.0.0.1:9645)");
  cmd->add_flag("--json", args->json, "Print the agent's JSON");
  cmd->add_option("--since", args->since, "Windows of this long ago and later, e.g. 6h, 7d (default 7d)");
  cmd->add_option("--slice", args->slice, "Only this slice's rows under each window (sliced streams)");
  cmd->callback([args, &exit_code] {
    const auto since = core::parse_duration(args->since);
    if (!since || since->count() <= 0) {
      std::fprintf(stderr, "mltap performance: --since must be a duration such as 6h or 7d (got '%s')\n",
                   args->since.c_str());
      exit_code = 2;
      return;
    }
    std::string error;
    auto doc = get_json(args->agent, "/api/v1/performance?stream=" + percent_encode(args->stream) +
                                         "&since=" + percent_encode(args->since),
                        error);
    if (!doc) {
      std::fprintf(stderr, "mltap performance: %s\n", error.c_str());
      exit_code = 2;
      return;
    }
    try {
      if (args->json) std::cout << doc->dump(2) << "\n";
      else print_performance(*doc, std::cout, args->slice);
      exit_code = 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mltap performance: unexpected answer from mltapd: %s\n", e.what());
      exit_code = 2;
    }
  });
}

}  // namespace mltap::cli
