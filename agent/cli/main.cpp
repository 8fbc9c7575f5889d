// mltap: command-line client. Every subcommand lives in agent/cli and talks to the components
// through their libraries (profile, drift) or to mltapd through its HTTP API (status, explain).
#include <CLI/CLI.hpp>

#include "agent/cli/backfill_command.hpp"
#include "agent/cli/explain.hpp"
#include "agent/cli/lineage_commands.hpp"
#include "agent/cli/performance_command.hpp"
#include "agent/cli/profile_commands.hpp"
#include "agent/cli/status_command.hpp"

int main(int argc, char** argv) {
  CLI::App app{"mltap: inspect and operate mltap (streams, drift, events)"};
  app.require_subcommand(1);
  int exit_code = 0;
  mltap::cli::add_status_command(app, exit_code);
  mltap::cli::add_detector_commands(app, exit_code);
  mltap::cli::add_explain_command(app, exit_code);
  mltap::cli::add_performance_command(app, exit_code);
  mltap::cli::add_lineage_commands(app, exit_code);
  mltap::cli::add_backfill_command(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
