#include "agent/reactions/reaction_engine.hpp"

#include <algorithm>
#include <cctype>
#include <sstream>
#include <stdexcept>

#include <unistd.h>

#include <nlohmann/json.hpp>
#include "core/log.hpp"

namespace mltap::reactions {

using core::alert_status_name;
using core::AlertEvent;
using core::AlertStatus;
using core::ControlPlane;
using core::ControlResult;
using core::reaction_result_name;
using core::ReactionResult;

namespace {

constexpr std::size_t kMaxTrackedTargets = 10000;       // cooldown / active tables
constexpr std::size_t kMaxFingerprintsPerTarget = 10000;
constexpr std::size_t kAuditOutputBytes = 4096;          // exec output kept in an audit record

std::vector<std::string> reaction_names(const ReactionsConfig& c) {
  std::vector<std::string> names;
  for (const auto& r : c.actions) names.push_back(r.name);
  return names;
}

std::vector<std::string> split_names(const std::string& list) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : list + ",") {
    if (c == ',') {
      std::size_t b = 0, e = cur.size();
      while (b < e && std::isspace(static_cast<unsigned char>(cur[b]))) ++b;
      while (e > b && std::isspace(static_cast<unsigned char>(cur[e - 1]))) --e;
      if (e > b) out.push_back(cur.substr(b, e - b));
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  return out;
}

std::string env_name_for_label(const std::string& label) {
  std::string n = "MLTAP_LABEL_";
  for (char c : label) n.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  return n;
}

std::string truncate(std::string s, std::size_t max) {
  if (s.size() > max) s.resize(max);
  return s;
}

nlohmann::json alert_json(const AlertEvent& a) {
  return {{"fingerprint", a.fingerprint},
          {"status", alert_status_name(a.status)},
          {"alertname", truncate(a.label("alertname"), 256)},
          {"startsAt", a.starts_at},
          {"receiver", truncate(a.receiver, 256)}};
}

}  // namespace

std::string sanitize_env_value(std::string_view value) {
  std::string out;
  for (char c : value.substr(0, 256)) {
    const unsigned char u = static_cast<unsigned char>(c);
    const bool ok = std::isalnum(u) || c == ' ' || c == '_' || c == '.' || c == ',' || c == ':' ||
                    c == '/' || c == '@' || c == '=' || c == '+' || c == '-';
    out.push_back(ok ? c : '_');
  }
  return out;
}

ReactionEngine::ReactionEngine(ReactionsConfig config, ControlPlane& control, SnapshotProviders providers)
    : config_(std::move(config)),
      control_(control),
      providers_(std::move(providers)),
      counters_(reaction_names(config_)),
      audit_(config_.audit_log, config_.audit_log_max_bytes, config_.audit_log_keep),
      rate_windows_(config_.actions.size()),
      exec_(std::make_unique<ExecRunner>(config_.max_concurrent_exec)) {
  for (auto& r : config_.actions) {
    if (auto* exec = std::get_if<ExecAction>(&r.action); exec && !exec->program) {
      std::string error;
      exec->program = ProgramFile::open(exec->path, ::geteuid(), &error);
      if (!exec->program) throw std::runtime_error("reaction '" + r.name + "': " + error);
    }
    if (const auto* snap = std::get_if<SnapshotAction>(&r.action)) {
      auto writer = std::make_unique<SnapshotWriter>(*snap, r.name);
      if (auto err = writer->prepare(); !err.empty()) {
        throw std::runtime_error("reaction '" + r.name + "': " + err);
      }
      snapshots_.push_back(std::move(writer));
    } else {
      snapshots_.push_back(nullptr);
    }
  }
}

ReactionEngine::~ReactionEngine() { stop(); }

void ReactionEngine::start() {
  std::lock_guard lock(mu_);
  if (started_ || stopping_) return;
  started_ = true;
  thread_ = std::thread([this] { worker(); });
}

void ReactionEngine::stop() {
  std::size_t dropped = 0;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    dropped = queue_.size();
    queue_.clear();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (dropped > 0) core::log::warn("reactions: {} queued alerts dropped at shutdown", dropped);
  if (config_.undo_on_stop) undo_all("mltapd stopping");
  exec_.reset();  // kills running programs; their results are still audited
  idle_cv_.notify_all();
}

ReactionEngine::Submit ReactionEngine::submit(AlertEvent alert) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return Submit::stopped;
    if (queue_.size() >= config_.queue_capacity) {
      ++queue_rejections_;
      return Submit::queue_full;
    }
    queue_.push_back(std::move(alert));
  }
  cv_.notify_one();
  return Submit::accepted;
}

std::size_t ReactionEngine::queue_depth() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

std::uint64_t ReactionEngine::queue_rejections() const {
  std::lock_guard lock(mu_);
  return queue_rejections_;
}

std::vector<std::string> ReactionEngine::unknown_requested(const AlertEvent& alert) const {
  std::vector<std::string> unknown;
  auto it = alert.labels.find(config_.request_label);
  if (it == alert.labels.end()) return unknown;
  for (const auto& name : split_names(it->second)) {
    if (!config_.find(name)) unknown.push_back(name);
  }
  return unknown;
}

void ReactionEngine::audit_rejected(const AlertEvent& alert, const std::string& result,
                                    const std::string& detail) {
  audit_.append({{"reaction", nullptr}, {"action", "reject"}, {"result", result},
                 {"alert", alert_json(alert)}, {"detail", truncate(detail, 1024)}});
}

bool ReactionEngine::wait_idle(std::chrono::milliseconds timeout) const {
  const auto deadline = Clock::now() + timeout;
  {
    std::unique_lock lock(mu_);
    if (!idle_cv_.wait_until(lock, deadline, [&] { return (queue_.empty() && !processing_) || stopping_; })) {
      return false;
    }
  }
  if (!exec_) return true;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return exec_->wait_idle(std::max(left, std::chrono::milliseconds(0)));
}

void ReactionEngine::worker() {
  for (;;) {
    AlertEvent alert;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      alert = std::move(queue_.front());
      queue_.pop_front();
      processing_ = true;
    }
    try {
      process(alert);
    } catch (const std::exception& e) {
      core::log::error("reactions: alert {}: {}", alert.fingerprint, e.what());
    }
    {
      std::lock_guard lock(mu_);
      processing_ = false;
      if (queue_.empty()) idle_cv_.notify_all();
    }
  }
}

void ReactionEngine::process(const AlertEvent& alert) {
  std::vector<std::string> requested;
  const bool has_request = alert.labels.count(config_.request_label) > 0;
  if (has_request) requested = split_names(alert.labels.at(config_.request_label));
  for (std::size_t i = 0; i < config_.actions.size(); ++i) {
    const ReactionSpec& spec = config_.actions[i];
    if (has_request && std::find(requested.begin(), requested.end(), spec.name) == requested.end()) continue;
    if (!spec.matches(alert.labels)) continue;
    const std::string stream = alert.label(spec.stream_label);
    if (alert.status == AlertStatus::firing) fire(i, spec, alert, stream);
    else resolve(i, spec, alert, stream);
  }
}

bool ReactionEngine::allowed(std::size_t index, const ReactionSpec& spec, const std::string& stream,
                             const AlertEvent& alert, const char* action) {
  const auto now = Clock::now();
  if (spec.cooldown.count() > 0) {
    auto it = last_run_.find({index, stream});
    if (it != last_run_.end() && now - it->second < spec.cooldown) {
      const auto left = std::chrono::duration_cast<std::chrono::seconds>(spec.cooldown - (now - it->second));
      record(index, spec, &alert, stream, action, ReactionResult::cooldown,
             "ran for this stream less than cooldown ago; " + std::to_string(left.count()) + "s left");
      return false;
    }
    if (last_run_.size() >= kMaxTrackedTargets) {
      // Forget cooldowns that ended; the table stays bounded whatever labels alerts carry.
      for (auto e = last_run_.begin(); e != last_run_.end();) {
        const auto& s = config_.actions[e->first.reaction];
        e = now - e->second >= s.cooldown ? last_run_.erase(e) : std::next(e);
      }
      if (last_run_.size() >= kMaxTrackedTargets) {
        record(index, spec, &alert, stream, action, ReactionResult::busy, "cooldown table full");
        return false;
      }
    }
  }
  if (spec.rate_limit.max > 0) {
    auto& window = rate_windows_[index];
    while (!window.empty() && now - window.front() >= spec.rate_limit.per) window.pop_front();
    if (window.size() >= spec.rate_limit.max) {
      record(index, spec, &alert, stream, action, ReactionResult::rate_limited,
             std::to_string(spec.rate_limit.max) + " runs per " +
                 std::to_string(std::chrono::duration_cast<std::chrono::seconds>(spec.rate_limit.per).count()) +
                 "s used up");
      return false;
    }
  }
  return true;
}

void ReactionEngine::consume(std::size_t index, const ReactionSpec& spec, const std::string& stream) {
  const auto now = Clock::now();
  if (spec.rate_limit.max > 0) rate_windows_[index].push_back(now);
  if (spec.cooldown.count() > 0) last_run_[{index, stream}] = now;
}

void ReactionEngine::fire(std::size_t index, const ReactionSpec& spec, const AlertEvent& alert,
                          const std::string& stream) {
  if (spec.needs_stream() && stream.empty()) {
    record(index, spec, &alert, stream, "apply", ReactionResult::no_target,
           "alert has no '" + spec.stream_label + "' label");
    return;
  }
  if (spec.reversible()) {
    const TargetKey key{index, stream};
    auto it = active_.find(key);
    if (it != active_.end() && !it->second.empty()) {
      // Already applied for this stream: this alert now also holds it until it resolves.
      if (it->second.size() >= kMaxFingerprintsPerTarget && !it->second.count(alert.fingerprint)) {
        record(index, spec, &alert, stream, "apply", ReactionResult::busy, "too many alerts hold this reaction");
        return;
      }
      it->second.insert(alert.fingerprint);
      record(index, spec, &alert, stream, "apply", ReactionResult::already_active,
             std::to_string(it->second.size()) + " alerts hold it");
      return;
    }
    if (active_.size() >= kMaxTrackedTargets) {
      record(index, spec, &alert, stream, "apply", ReactionResult::busy, "active reaction table full");
      return;
    }
  }
  if (!allowed(index, spec, stream, alert, "apply")) return;
  if (const auto* exec = std::get_if<ExecAction>(&spec.action)) {
    // A program refused for lack of a slot ("busy") has not run: it uses no cooldown.
    if (run_exec(index, spec, *exec, alert, "apply") != ExecRunner::Start::busy) consume(index, spec, stream);
    return;
  }
  consume(index, spec, stream);
  std::string detail;
  const auto started = Clock::now();
  const ReactionResult result = apply(index, spec, alert, stream, detail);
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
  if (spec.reversible() && result == ReactionResult::ok) active_[{index, stream}].insert(alert.fingerprint);
  record(index, spec, &alert, stream, "apply", result, detail, {{"duration_ms", ms}});
}

void ReactionEngine::resolve(std::size_t index, const ReactionSpec& spec, const AlertEvent& alert,
                             const std::string& stream) {
  if (spec.reversible()) {
    auto it = active_.find({index, stream});
    if (it == active_.end() || it->second.erase(alert.fingerprint) == 0) return;  // never applied for it
    if (!it->second.empty()) return;  // other alerts still hold it
    active_.erase(it);
    std::string detail;
    const ReactionResult result = undo(spec, stream, detail);
    record(index, spec, &alert, stream, "undo", result, detail);
    return;
  }
  if (const auto* exec = std::get_if<ExecAction>(&spec.action); exec && exec->on_resolved) {
    // Resolved runs skip the cooldown (they follow a run that passed it) but count towards the
    // rate limit.
    if (spec.rate_limit.max > 0) {
      auto& window = rate_windows_[index];
      const auto now = Clock::now();
      while (!window.empty() && now - window.front() >= spec.rate_limit.per) window.pop_front();
      if (window.size() >= spec.rate_limit.max) {
        record(index, spec, &alert, stream, "resolved", ReactionResult::rate_limited, "rate limit used up");
        return;
      }
    }
    if (run_exec(index, spec, *exec, alert, "resolved") != ExecRunner::Start::busy && spec.rate_limit.max > 0) {
      rate_windows_[index].push_back(Clock::now());
    }
  }
}

ReactionResult ReactionEngine::apply(std::size_t index, const ReactionSpec& spec, const AlertEvent& alert,
                                     const std::string& stream, std::string& detail) {
  if (const auto* flag = std::get_if<FlagAction>(&spec.action)) {
    const ControlResult r = control_.set_flag(stream, flag->flag, flag->value);
    detail = "set flag " + flag->flag + "=" + std::to_string(flag->value) + " on " +
             std::to_string(r.producers_affected) + " segments" + (r.ok ? "" : ": " + r.error);
    return r.ok ? ReactionResult::ok : ReactionResult::failed;
  }
  if (const auto* sampling = std::get_if<SamplingAction>(&spec.action)) {
    const auto until = std::chrono::system_clock::now() + sampling->duration;
    const auto until_ns = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(until.time_since_epoch()).count());
    const ControlResult r = control_.boost_sampling(stream, sampling->permille, until_ns);
    detail = "sampling >= " + std::to_string(sampling->permille) + " permille for " +
             std::to_string(std::chrono::duration_cast<std::chrono::seconds>(sampling->duration).count()) +
             "s on " + std::to_string(r.producers_affected) + " segments" + (r.ok ? "" : ": " + r.error);
    return r.ok ? ReactionResult::ok : ReactionResult::failed;
  }
  if (const auto* sig = std::get_if<SignalAction>(&spec.action)) {
    const auto producers = control_.producers(stream);
    if (producers.empty()) {
      detail = "stream has no live producers";
      return ReactionResult::no_target;
    }
    // Through the pidfds the ingest layer took when it verified each producer (never by pid).
    const core::SignalReport r = control_.signal_producers(stream, sig->signal);
    detail = sig->signal_name + ": " + r.detail;
    if (r.signalled > 0 && r.failed == 0) return ReactionResult::ok;
    if (r.signalled == 0 && r.failed == 0) return ReactionResult::no_target;
    return ReactionResult::failed;
  }
  if (std::holds_alternative<SnapshotAction>(spec.action)) {
    const SnapshotResult r = snapshots_[index]->write(alert, stream, control_, providers_);
    if (!r.ok) {
      detail = "snapshot failed: " + r.error;
      return ReactionResult::failed;
    }
    detail = "bundle " + r.bundle + " (" + std::to_string(r.records) + " records, " + std::to_string(r.bytes) +
             " bytes, " + std::to_string(r.removed_bundles) + " old bundles removed)";
    return ReactionResult::ok;
  }
  detail = "unsupported action";
  return ReactionResult::failed;
}

ReactionResult ReactionEngine::undo(const ReactionSpec& spec, const std::string& stream, std::string& detail) {
  ControlResult r;
  if (const auto* flag = std::get_if<FlagAction>(&spec.action)) {
    r = control_.set_flag(stream, flag->flag, 0);
    detail = "cleared flag " + flag->flag + " on " + std::to_string(r.producers_affected) + " segments";
  } else {
    r = control_.boost_sampling(stream, 0, 0);
    detail = "cleared sampling boost on " + std::to_string(r.producers_affected) + " segments";
  }
  if (!r.ok) detail += ": " + r.error;
  return r.ok ? ReactionResult::undone : ReactionResult::undo_failed;
}

void ReactionEngine::undo_all(const char* why) {
  for (auto& [key, fingerprints] : active_) {
    const ReactionSpec& spec = config_.actions[key.reaction];
    std::string detail;
    const ReactionResult result = undo(spec, key.stream, detail);
    record(key.reaction, spec, nullptr, key.stream, "undo", result, detail + " (" + why + ")");
  }
  active_.clear();
}

ExecRunner::Start ReactionEngine::run_exec(std::size_t index, const ReactionSpec& spec, const ExecAction& exec,
                                           const AlertEvent& alert, const char* action) {
  const std::string stream = alert.label(spec.stream_label);
  // Checked again now: the program or a folder above it may have been replaced or made writable
  // since the configuration was loaded. What runs is the inode opened at load.
  if (std::string why = exec.program->recheck(); !why.empty()) {
    core::log::error("reaction {}: refusing to run its program: {}", spec.name, why);
    record(index, spec, &alert, stream, action, ReactionResult::refused, why);
    return ExecRunner::Start::spawn_failed;
  }
  ExecRequest req;
  req.path = exec.path;
  req.program_fd = exec.program->fd();
  req.argv.push_back(exec.path);
  req.argv.insert(req.argv.end(), exec.args.begin(), exec.args.end());
  req.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"};
  req.env.push_back("MLTAP_REACTION=" + spec.name);
  req.env.push_back("MLTAP_ALERT_STATUS=" + std::string(alert_status_name(alert.status)));
  req.env.push_back("MLTAP_ALERT_FINGERPRINT=" + sanitize_env_value(alert.fingerprint));
  for (const auto& label : exec.env_labels) {
    auto it = alert.labels.find(label);
    if (it != alert.labels.end()) req.env.push_back(env_name_for_label(label) + "=" + sanitize_env_value(it->second));
  }
  req.env.insert(req.env.end(), exec.env.begin(), exec.env.end());
  req.working_dir = exec.working_dir;
  req.timeout = exec.timeout;
  req.kill_grace = exec.kill_grace;
  req.max_output_bytes = exec.max_output_bytes;

  nlohmann::json alert_doc = alert_json(alert);
  // The callback runs on the exec runner's thread; it captures copies, not the alert.
  auto done = [this, index, &spec, stream, alert_doc, action = std::string(action)](ExecResult r) {
    ReactionResult result = ReactionResult::failed;
    std::string detail;
    switch (r.outcome) {
      case ExecOutcome::exited:
        result = r.exit_code == 0 ? ReactionResult::ok : ReactionResult::failed;
        detail = "exit code " + std::to_string(r.exit_code);
        break;
      case ExecOutcome::killed_by_signal:
        detail = "killed by signal " + std::to_string(r.term_signal);
        break;
      case ExecOutcome::timed_out:
        result = ReactionResult::timeout;
        detail = "timed out; process group killed";
        break;
      case ExecOutcome::shutdown:
        detail = "killed: mltapd stopping";
        break;
      case ExecOutcome::spawn_failed:
        detail = r.error;
        break;
    }
    if (!r.output.empty()) {
      core::log::info("reaction {} (pid {}) output ({} bytes{}):\n{}", spec.name, r.pid, r.output_bytes,
                   r.output_truncated ? ", truncated" : "", truncate(r.output, kAuditOutputBytes));
    }
    counters_.add(index, result);
    audit_.append({{"reaction", spec.name},
                   {"type", reaction_type_name(spec.type())},
                   {"action", action},
                   {"result", reaction_result_name(result)},
                   {"target", stream},
                   {"alert", alert_doc},
                   {"detail", detail},
                   {"pid", r.pid},
                   {"exit_code", r.exit_code},
                   {"signal", r.term_signal},
                   {"duration_ms", std::chrono::duration<double, std::milli>(r.duration).count()},
                   {"output", truncate(r.output, kAuditOutputBytes)},
                   {"output_bytes", r.output_bytes},
                   {"output_truncated", r.output_truncated || r.output.size() > kAuditOutputBytes}});
  };
  std::string error;
  const auto started = exec_->start(std::move(req), std::move(done), &error);
  if (started == ExecRunner::Start::busy) {
    record(index, spec, &alert, stream, action, ReactionResult::busy, error);
  } else if (started == ExecRunner::Start::spawn_failed) {
    record(index, spec, &alert, stream, action, ReactionResult::failed, error);
  }
  return started;
}

void ReactionEngine::record(std::size_t index, const ReactionSpec& spec, const AlertEvent* alert,
                            const std::string& stream, const char* action, ReactionResult result,
                            const std::string& detail) {
  record(index, spec, alert, stream, action, result, detail, nlohmann::json::object());
}

void ReactionEngine::record(std::size_t index, const ReactionSpec& spec, const AlertEvent* alert,
                            const std::string& stream, const char* action, ReactionResult result,
                            const std::string& detail, nlohmann::json extra) {
  counters_.add(index, result);
  nlohmann::json rec = {{"reaction", spec.name},
                        {"type", reaction_type_name(spec.type())},
                        {"action", action},
                        {"result", reaction_result_name(result)},
                        {"target", stream},
                        {"detail", detail}};
  if (alert) rec["alert"] = alert_json(*alert);
  for (auto& [k, v] : extra.items()) rec[k] = v;
  audit_.append(std::move(rec));
}

}  // namespace mltap::reactions
