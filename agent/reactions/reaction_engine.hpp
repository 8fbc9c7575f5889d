// The reaction engine: takes alerts from the webhook receiver (never blocking it), picks the
// configured reactions whose matchers accept the alert, applies cooldowns and rate limits, runs
// the actions on its own worker thread (programs on the exec runner's thread), undoes reversible
// actions when the alert resolves, and writes every decision to the audit log and the counters.
//
// Threads: submit() from any thread (bounded queue, fails fast when full); one worker thread runs
// the decisions and calls ControlPlane; exec results arrive on the ExecRunner's monitor thread.
// ControlPlane is only called from the worker thread (and from stop() after the worker ended).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent/reactions/audit_log.hpp"
#include "agent/reactions/exec_runner.hpp"
#include "agent/reactions/reaction_config.hpp"
#include "agent/reactions/snapshot_writer.hpp"
#include "core/alert.hpp"
#include "core/control_plane.hpp"
#include "core/reaction_counters.hpp"

namespace mltap::reactions {

class ReactionEngine final : public core::AlertSink {
 public:
  // Opens the audit log and prepares snapshot directories; throws std::runtime_error naming the
  // path when that fails. `control` must outlive the engine.
  ReactionEngine(ReactionsConfig config, core::ControlPlane& control, SnapshotProviders providers = {});
  ~ReactionEngine() override;  // stop()
  ReactionEngine(const ReactionEngine&) = delete;
  ReactionEngine& operator=(const ReactionEngine&) = delete;

  void start();
  // Stops taking alerts, finishes the alert in progress, drops the queue, undoes active reversible
  // reactions when undo_on_stop is set, and kills running programs. Idempotent.
  void stop();

  // Never blocks (beyond a short lock). Thread-safe.
  Submit submit(core::AlertEvent alert) override;

  // Names in the alert's request label (comma separated) that no configured reaction has.
  std::vector<std::string> unknown_requested(const core::AlertEvent& alert) const override;
  // Audit record for an alert the receiver refused before it reached the engine.
  void audit_rejected(const core::AlertEvent& alert, const std::string& result,
                      const std::string& detail) override;

  // True once the queue is empty, no alert is being processed and no program runs.
  bool wait_idle(std::chrono::milliseconds timeout) const;

  const ReactionsConfig& config() const noexcept { return config_; }
  const core::ReactionCounters& counters() const noexcept { return counters_; }
  std::size_t queue_depth() const;
  std::uint64_t queue_rejections() const;  // submit() calls refused because the queue was full
  AuditLog& audit() noexcept { return audit_; }

 private:
  struct TargetKey {
    std::size_t reaction;
    std::string stream;
    auto operator<=>(const TargetKey&) const = default;
  };

  void worker();
  void process(const core::AlertEvent& alert);
  void fire(std::size_t index, const ReactionSpec& spec, const core::AlertEvent& alert, const std::string& stream);
  void resolve(std::size_t index, const ReactionSpec& spec, const core::AlertEvent& alert, const std::string& stream);
  ExecRunner::Start run_exec(std::size_t index, const ReactionSpec& spec, const ExecAction& exec,
                             const core::AlertEvent& alert, const char* action);
  core::ReactionResult apply(std::size_t index, const ReactionSpec& spec, const core::AlertEvent& alert,
                       const std::string& stream, std::string& detail);
  core::ReactionResult undo(const ReactionSpec& spec, const std::string& stream, std::string& detail);
  // Cooldown and rate limit: false (and audited) when the reaction may not act now.
  bool allowed(std::size_t index, const ReactionSpec& spec, const std::string& stream,
               const core::AlertEvent& alert, const char* action);
  // Books an attempt against the cooldown and the rate limit.
  void consume(std::size_t index, const ReactionSpec& spec, const std::string& stream);
  void record(std::size_t index, const ReactionSpec& spec, const core::AlertEvent* alert, const std::string& stream,
              const char* action, core::ReactionResult result, const std::string& detail);
  // The same, with fields of the action's own (e.g. its duration) in the audit record.
  void record(std::size_t index, const ReactionSpec& spec, const core::AlertEvent* alert, const std::string& stream,
              const char* action, core::ReactionResult result, const std::string& detail,
              nlohmann::json extra);
  void undo_all(const char* why);

  ReactionsConfig config_;
  core::ControlPlane& control_;
  SnapshotProviders providers_;
  core::ReactionCounters counters_;
  AuditLog audit_;
  std::vector<std::unique_ptr<SnapshotWriter>> snapshots_;  // by reaction index (null if not snapshot)

  // Queue (guarded by mu_).
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  mutable std::condition_variable idle_cv_;
  std::deque<core::AlertEvent> queue_;
  bool stopping_ = false;
  bool started_ = false;
  bool processing_ = false;
  std::uint64_t queue_rejections_ = 0;
  std::thread thread_;

  // Worker-thread state.
  using Clock = std::chrono::steady_clock;
  std::map<TargetKey, Clock::time_point> last_run_;          // cooldowns
  std::vector<std::deque<Clock::time_point>> rate_windows_;  // rate limits, by reaction
  std::map<TargetKey, std::set<std::string>> active_;        // reversible: fingerprints holding it

  // Last: its destructor kills running programs before the members above go away.
  std::unique_ptr<ExecRunner> exec_;
};

// Environment value made safe for a program: bytes outside [A-Za-z0-9 _.,:/@=+-] become '_',
// at most 256 bytes.
std::string sanitize_env_value(std::string_view value);

}  // namespace mltap::reactions
