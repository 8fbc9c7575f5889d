// `mltap performance STREAM`: per prediction-time window, the predictions, the labelled ones and
// each realized metric (GET /api/v1/performance?stream=...); printed by performance_output.hpp.
#pragma once

#include <CLI/CLI.hpp>

namespace mltap::cli {
void add_performance_command(CLI::App& app, int& exit_code);
}  // namespace mltap::cli
