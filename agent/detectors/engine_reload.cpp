// Reload (SIGHUP): a new `detectors:` section and the reference files re-read, applied on the
// writer thread between two batches, so that no window, finding or counter is touched by two
// threads and no record is analyzed half under the old and half under the new settings.
//
// What a reload does to a running stream, and why:
// - settings unchanged and reference file content unchanged: nothing;
// - settings changed: the stream takes them. Thresholds, window sizes, confirmation counts and
//   quality limits are read where they are used, so the open windows continue under them. Bins,
//   CUSUM tuning, fleet bins and embedding settings are compiled into the reference state: the
//   reference is recompiled (a file's profile, or the pinned reference's document while it is in
//   memory) and the stream's windows and sequential detectors restart, since a window half-counted
//   under other bins cannot be compared; when the pinned document is only in the state directory
//   those settings wait for the next start, and the report says so;
// - reference file content changed (or a file newly configured): swapped in when it has the
//   stream's layout, width and feature names, else the running reference stays and the report
//   says why (the stream's shape is the producer's, not the configuration's);
// - a reference file no longer configured: the running reference stays until the next start
//   (pinning again from records that may already be drifting is what the state directory exists
//   to avoid).
// Findings stay open under their ids; records and finding counters continue.
#include <algorithm>
#include <utility>

#include "agent/detectors/engine.hpp"
#include "agent/detectors/engine_state.hpp"

namespace mltap::detectors {
namespace {

using Profiles = std::unordered_map<std::string, std::shared_ptr<const ReferenceProfile>>;

bool same_profile(const ReferenceProfile* a, const ReferenceProfile* b) {
  if (!a || !b) return a == b;
  return a == b || profile_to_json_text(*a) == profile_to_json_text(*b);
}

// The new profile fits a stream that already analyzes records: same layout, width and names.
std::string misfit(const StreamState& s, const ReferenceProfile& p) {
  if (p.layout != s.layout) return "its layout differs from the stream's";
  if (p.column_count() != s.in_cols) {
    return "it has " + std::to_string(p.column_count()) + " columns, the stream " +
           std::to_string(s.in_cols);
  }
  if (p.features.size() != s.feats.size()) return "its analyzed features differ in number";
  for (std::size_t i = 0; i < s.feats.size(); ++i) {
    if (p.features[i].name != s.feats[i].name) {
      return "feature " + std::to_string(i) + " is '" + p.features[i].name + "', the stream's '" +
             s.feats[i].name + "'";
    }
  }
  return {};
}

// The settings compiled into a stream's reference state (engine_reference.cpp init_from_profile;
// changing them needs the reference recompiled): bins, CUSUM tuning, fleet bins, embedding
// projections, the class threshold. One list for comparing and for keeping them: fn(a's, b's).
template <class A, class B, class Fn>
void for_each_compiled(A& a, B& b, Fn&& fn) {
  fn(a.drift.bins, b.drift.bins);
  fn(a.drift.coarse_bins, b.drift.coarse_bins);
  fn(a.sequential, b.sequential);
  fn(a.fleet_bins, b.fleet_bins);
  fn(a.embedding, b.embedding);
  fn(a.class_threshold, b.class_threshold);
}

bool compiled_differ(const StreamSettings& a, const StreamSettings& b) {
  bool differ = false;
  for_each_compiled(a, b, [&](const auto& x, const auto& y) { differ = differ || !(x == y); });
  return differ;
}

void keep_compiled(const StreamSettings& from, StreamSettings& to) {
  for_each_compiled(from, to, [](const auto& x, auto& y) { y = x; });
}

void reload_stream(EngineState& e, StreamState& s, const Profiles& before,
                   std::vector<std::string>& report) {
  const StreamSettings& next = e.config.settings_for(s.name);
  const auto nit = e.preloaded.find(s.name);
  const auto oit = before.find(s.name);
  const ReferenceProfile* np = nit == e.preloaded.end() ? nullptr : nit->second.get();
  const ReferenceProfile* op = oit == before.end() ? nullptr : oit->second.get();
  const bool settings_changed = !(next == s.st);
  const bool file_changed = np != nullptr && (s.ref_source != ReferenceSource::file || !same_profile(np, op));
  if (!settings_changed && !file_changed) {
    if (!np && s.ref_source == ReferenceSource::file && !s.st.reference.empty()) {
      report.push_back("stream '" + s.name + "': no reference file configured any more; the running reference (" +
                       s.ref_path + ") stays until the next start");
    }
    return;
  }
  const std::string label = "stream '" + s.name + "': ";
  const StreamSettings old_st = s.st;
  s.st = next;
  s.analyzable = next.enabled && s.kind != format::StreamKind::raw;
  if (file_changed && s.feats.empty()) {
    // No reference yet (no record seen, or pinning not started): take the file as a new stream
    // would.
    s.ref_path = next.reference;
    init_from_profile(e, s, *np, ReferenceSource::file);
    report.push_back(label + "reference " + next.reference + " (" + std::to_string(np->rows) + " rows)");
    return;
  }
  if (file_changed) {
    if (const std::string why = misfit(s, *np); why.empty()) {
      s.ref_path = next.reference;
      s.ref_error.clear();
      init_from_profile(e, s, *np, ReferenceSource::file);
      s.pinned_json.clear();  // a file reference is re-read at start, not checkpointed
      ++s.state_changes;
      report.push_back(label + "reference " + next.reference + " reloaded (" + std::to_string(np->rows) +
                       " rows); windows restart");
      return;
    } else {
      report.push_back(label + "reference " + next.reference + " not used: " + why +
                       "; the running reference stays");
    }
  }
  if (!settings_changed) return;
  if (!s.ready || !compiled_differ(old_st, next)) {
    // Thresholds, window sizes, confirmation counts, quality limits: read where they are used,
    // so the open windows continue under them.
    report.push_back(label + "settings changed; applied to the open windows");
    if (s.ready) init_looks(s);  // the fast looks' levels and budget follow them (snapshots restart)
    return;
  }
  // Bins, CUSUM tuning, fleet bins: compiled into the reference; recompiled on the reference the
  // stream runs on now, and its windows and sequential detectors restart.
  if (s.ref_source == ReferenceSource::file && op != nullptr && misfit(s, *op).empty()) {
    init_from_profile(e, s, *op, ReferenceSource::file);
  } else if (s.ref_source == ReferenceSource::pinned && !s.pinned_json.empty()) {
    try {
      const ReferenceProfile p = profile_from_json_text(s.pinned_json, "pinned reference of '" + s.name + "'");
      init_from_profile(e, s, p, ReferenceSource::pinned);
    } catch (const ProfileError& ex) {
      keep_compiled(old_st, s.st);
      init_looks(s);  // the settings that do apply now include the fast looks'
      report.push_back(label + "settings changed; bins and sequential tuning kept until the next start (" +
                       ex.what() + ")");
      return;
    }
  } else {
    // The pinned reference's document is in the state directory, no longer in memory.
    keep_compiled(old_st, s.st);
    init_looks(s);  // the settings that do apply now include the fast looks'
    report.push_back(label + "settings changed; bins, sequential tuning and fleet bins change at the "
                             "next start, the rest applies to the open windows");
    return;
  }
  report.push_back(label + "settings changed; windows and sequential detectors restart");
}

}  // namespace

Profiles load_references(const EngineConfig& config) {
  Profiles out;
  for (const auto& [name, st] : config.streams) {
    if (st.reference.empty()) continue;
    try {
      out[name] = std::make_shared<const ReferenceProfile>(load_profile(st.reference));
    } catch (const ProfileError& ex) {
      throw ProfileError("detectors.streams." + name + ".reference: " + ex.what());
    }
  }
  return out;
}

std::optional<std::vector<std::string>> DetectorEngine::reload(EngineConfig next,
                                                               std::chrono::milliseconds wait) {
  Profiles profiles = load_references(next);  // throws: nothing staged
  std::unique_lock<std::mutex> lock(reload_->mu);
  reload_->config = std::move(next);
  reload_->profiles = std::move(profiles);
  const std::uint64_t ticket = ++reload_->requested;
  reload_->staged.store(true, std::memory_order_release);
  if (!reload_->done.wait_for(lock, wait, [&] { return reload_->applied >= ticket; })) {
    return std::nullopt;
  }
  return reload_->report;
}

void DetectorEngine::apply_reload() {
  EngineState& e = *state_;
  EngineConfig next;
  Profiles profiles;
  std::uint64_t ticket = 0;
  {
    std::lock_guard<std::mutex> lock(reload_->mu);
    if (!reload_->config) return;
    next = std::move(*reload_->config);
    reload_->config.reset();
    profiles = std::move(reload_->profiles);
    reload_->profiles.clear();
    ticket = reload_->requested;
    reload_->staged.store(false, std::memory_order_relaxed);
  }
  flush_staging(e);  // rows that arrived under the old settings are analyzed under them
  std::vector<std::string> report;
  const EngineConfig& cur = e.config;
  if (next.enabled != cur.enabled) {
    report.push_back(std::string("detectors.enabled: ") + (next.enabled ? "true" : "false"));
  }
  if (next.max_streams != cur.max_streams) {
    report.push_back("detectors.max_streams: " + std::to_string(cur.max_streams) + " -> " +
                     std::to_string(next.max_streams) + " (for streams seen from now on)");
  }
  if (next.max_features_per_stream != cur.max_features_per_stream) {
    report.push_back("detectors.max_features_per_stream: for streams seen from now on");
  }
  if (next.snapshot_interval != cur.snapshot_interval || next.top_features != cur.top_features ||
      next.closed_findings_kept != cur.closed_findings_kept) {
    report.push_back("detectors: snapshot_interval, top_features, closed_findings_kept applied");
  }
  Profiles before = std::move(e.preloaded);
  e.config = std::move(next);
  e.preloaded = std::move(profiles);
  for (auto& sp : e.streams) reload_stream(e, *sp, before, report);
  e.dirty = true;
  std::lock_guard<std::mutex> lock(reload_->mu);
  reload_->report = std::move(report);
  reload_->applied = ticket;
  reload_->done.notify_all();
}

}  // namespace mltap::detectors
