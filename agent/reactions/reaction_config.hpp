// The `reactions:` section of mltapd's config: which actions the operator allows, on which
// alerts, how often. Parsed strictly (unknown keys are errors with file:line:col).
//
//   reactions:
//     audit_log: /var/log/mltap/reactions.jsonl
//     actions:
//       fallback:
//         type: producer-flag
//         matchers: ['alertname = "MltapStreamDrift"', 'severity = "critical"']
//         flag: use_fallback
//
// See docs/alerting.md for every key.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "agent/reactions/label_matcher.hpp"
#include "agent/reactions/program_file.hpp"
#include "core/config_reader.hpp"

namespace mltap::reactions {

using namespace std::chrono_literals;

enum class ReactionType { exec, signal, producer_flag, sampling, snapshot };

constexpr std::string_view reaction_type_name(ReactionType t) noexcept {
  switch (t) {
    case ReactionType::exec: return "exec";
    case ReactionType::signal: return "signal";
    case ReactionType::producer_flag: return "producer-flag";
    case ReactionType::sampling: return "sampling";
    case ReactionType::snapshot: return "snapshot";
  }
  return "exec";
}

// Runs a fixed program with a fixed argv; alert data only reaches it through allow-listed labels
// passed as MLTAP_LABEL_<NAME> environment variables. No shell is involved.
struct ExecAction {
  std::string path;                      // absolute, regular, executable, not group/world-writable
  // Opened and checked at load (owner and mode of the file and every folder above it); run
  // through this descriptor after a re-check. Null only when built by hand: the engine opens it.
  std::shared_ptr<const ProgramFile> program;
  std::vector<std::string> args;         // argv[1..]; argv[0] is `path`
  std::vector<std::string> env_labels;   // alert labels exported as MLTAP_LABEL_<UPPERCASE NAME>
  std::vector<std::string> env;          // fixed "NAME=value" entries
  std::chrono::nanoseconds timeout = 30s;
  std::chrono::nanoseconds kill_grace = 2s;  // SIGTERM to the process group, then SIGKILL
  std::uint64_t max_output_bytes = 64 * 1024;
  bool on_resolved = false;              // also run when the alert resolves
  std::string working_dir = "/";
};

// Sends a signal to every live producer process of the alert's stream.
struct SignalAction {
  int signal = 0;
  std::string signal_name;  // "SIGUSR1"
};

// Sets a named flag in the stream's control block; cleared when the alert resolves.
struct FlagAction {
  std::string flag;
  std::uint32_t value = 1;
};

// Raises the stream's sampling for `duration`; cleared when the alert resolves.
struct SamplingAction {
  std::uint32_t permille = 1000;
  std::chrono::nanoseconds duration = 10min;
};

// Writes an incident bundle directory; oldest bundles are removed beyond the limits.
struct SnapshotAction {
  std::string directory;
  std::uint32_t max_records = 1000;
  std::uint64_t max_record_bytes = 16ull << 20;  // payload of the raw records in one bundle
  std::uint64_t max_json_bytes = 4ull << 20;     // each provider's JSON (detector state, ...)
  std::uint64_t max_total_bytes = 256ull << 20;  // all bundles together
  std::uint32_t max_bundles = 20;
};

using ReactionAction = std::variant<ExecAction, SignalAction, FlagAction, SamplingAction,
                                    SnapshotAction>;

struct RateLimit {
  std::uint32_t max = 0;          // actions per `per`; 0 = unlimited
  std::chrono::nanoseconds per = 1h;
};

struct ReactionSpec {
  std::string name;                    // [A-Za-z0-9_.-]{1,64}; the `reaction` metric label
  std::vector<LabelMatcher> matchers;  // all must match
  std::chrono::nanoseconds cooldown = 1min;  // per reaction and target stream
  RateLimit rate_limit{60, 1h};              // per reaction, all targets together
  std::string stream_label = "stream";       // the alert label naming the target stream
  ReactionAction action;

  ReactionType type() const noexcept { return static_cast<ReactionType>(action.index()); }
  // Reversible reactions are undone when the alert that triggered them resolves.
  bool reversible() const noexcept {
    return type() == ReactionType::producer_flag || type() == ReactionType::sampling;
  }
  // Reactions that act on a stream need the stream label on the alert.
  bool needs_stream() const noexcept { return type() != ReactionType::exec; }
  bool matches(const core::LabelSet& labels) const;
};

struct ReactionsConfig {
  bool enabled = true;
  std::uint32_t queue_capacity = 1024;   // alerts waiting for the reaction worker
  std::uint32_t max_concurrent_exec = 4;
  std::string audit_log;                 // JSON lines; empty = audit records go to the log only
  std::uint64_t audit_log_max_bytes = 16ull << 20;
  std::uint32_t audit_log_keep = 3;      // rotated files kept: audit_log.1 .. audit_log.N
  std::string request_label = "mltap_reaction";  // optional alert label naming reactions to run
  bool undo_on_stop = true;              // clear flags/sampling boosts when mltapd stops
  std::vector<ReactionSpec> actions;

  const ReactionSpec* find(std::string_view name) const noexcept;
};

inline constexpr std::size_t kMaxReactions = 64;

// Parses the `reactions` section (a null section gives the defaults with no actions).
// Throws core::ConfigError naming file:line:col.
ReactionsConfig parse_reactions_config(core::ConfigSection section);

// Signal names accepted by `signal:` ("SIGUSR1" or "USR1").
std::optional<int> parse_signal_name(std::string_view name);

bool valid_reaction_name(std::string_view name) noexcept;
bool valid_flag_name(std::string_view name) noexcept;

}  // namespace mltap::reactions
