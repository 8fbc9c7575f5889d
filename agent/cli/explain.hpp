// `mltap explain STREAM`: the stream's findings with their most relevant system events, and the
// producers' timeline, as readable text. Built from GET /api/v1/events (checked field by field:
// the CLI trusts nothing it receives).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "agent/correlator/correlator.hpp"

namespace CLI {
class App;
}

namespace mltap::cli {

struct ExplainFinding {
  std::uint64_t id = 0;
  std::string kind;
  std::string severity;
  std::string reason;
  std::string summary;
  std::uint64_t opened_unix_ns = 0;
  std::uint64_t onset_unix_ns = 0;  // = opened_unix_ns when the agent sent none
  std::string onset_basis;
  std::uint64_t onset_resolution_ns = 0;
  std::uint64_t supersedes = 0;
  bool open = true;
  // Candidate causes (before the onset, most plausible first), then the events after the onset.
  std::vector<correlator::RelatedEvent> related;
};

struct ExplainReport {
  std::string stream;
  std::uint64_t since_unix_ns = 0;
  double window_seconds = 0;
  std::vector<core::ProducerId> producers;
  std::vector<ExplainFinding> findings;
  std::vector<core::SystemEvent> events;
};

// Throws std::invalid_argument naming what is wrong.
ExplainReport parse_explain_report(const nlohmann::json& body);
std::string format_explain(const ExplainReport& report, std::size_t max_timeline = 50);

struct ExplainArgs {
  std::string agent_url;
  std::string stream;
  std::string since = "1h";
  bool json = false;
};
// Fetches and prints; returns the process exit code (0 ok, 1 agent/response error, 2 usage).
int run_explain(const ExplainArgs& args, std::ostream& out, std::ostream& err);

// Registers `mltap explain STREAM [--agent URL] [--since DURATION] [--json]`.
void add_explain_command(CLI::App& app, int& exit_code);

}  // namespace mltap::cli
