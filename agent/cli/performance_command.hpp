// `mltap performance STREAM`: per prediction-time window, the predictions, the labelled ones and
// each realized metric (GET /api/v1/performance?stream=...).
#pragma once

#include <iosfwd>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace mltap::cli {
void add_performance_command(CLI::App& app, int& exit_code);
// The table printed for the agent's JSON of one stream (tests).
void print_performance(const nlohmann::json& doc, std::ostream& out, const std::string& slice = "");
}  // namespace mltap::cli
