// mltap: command-line client. Subcommands register themselves here; each lives with the
// component it belongs to.
#include <CLI/CLI.hpp>

#include "cli/status_command.hpp"
#include "correlator/explain.hpp"
#include "detectors/cli.hpp"

int main(int argc, char** argv) {
  CLI::App app{"mltap: inspect and operate mltap (streams, drift, events)"};
  app.require_subcommand(1);
  int exit_code = 0;
  mltap::cli::add_status_command(app, exit_code);
  mltap::detect::add_detector_commands(app, exit_code);
  mltap::correlate::add_explain_command(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
