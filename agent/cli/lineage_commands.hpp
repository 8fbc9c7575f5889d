// `mltap trace ID`, `mltap review STREAM`, `mltap flag STREAM ID...`: lineage by trace id over
// mltapd's retained samples (GET /api/v1/trace, GET /api/v1/review, POST /api/v1/flag;
// docs/lineage.md).
#pragma once

#include <iosfwd>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace mltap::cli {
void add_lineage_commands(CLI::App& app, int& exit_code);
// The text printed for the agent's JSON (tests).
void print_trace(const nlohmann::json& doc, std::ostream& out);
void print_review(const nlohmann::json& doc, std::ostream& out, std::size_t top);
}  // namespace mltap::cli
