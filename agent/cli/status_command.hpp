// `mltap status`: every stream the agent reads, with its producers, rates, drops and freshness.
#pragma once

#include <CLI/CLI.hpp>

namespace mltap::cli {
void add_status_command(CLI::App& app, int& exit_code);
}
