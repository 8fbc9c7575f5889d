// Opening, updating, superseding and closing findings. One finding per stream and kind is open at
// a time; "more of the same" updates it, a material change supersedes it (docs/detectors.md
// "Onset and material changes"), so that an alert rule or route keyed on the finding id sees a
// new problem as new instead of it being absorbed into the open finding.
#include <algorithm>

#include "agent/detectors/engine_state.hpp"

namespace mltap::detectors {
namespace {

std::string key_of(FindingKind kind, const FeatureEffect& fe) {
  return kind == FindingKind::data_quality ? fe.feature + "/" + fe.method : fe.feature;
}

bool has(const std::vector<std::string>& v, const std::string& k) {
  return std::find(v.begin(), v.end(), k) != v.end();
}

// Everything `top` (all of it, not only the reported head) and `reason` stand for.
void remember(FindingSlot& slot, FindingKind kind, const std::vector<FeatureEffect>& top,
              const std::string& reason, Severity sev) {
  auto add = [&](std::string k) {
    if (slot.seen.size() < kMaxSeen && !has(slot.seen, k)) slot.seen.push_back(std::move(k));
  };
  if (top.empty()) add("reason:" + reason);
  for (const auto& fe : top) add(key_of(kind, fe));
  slot.seen_severity = std::max(slot.seen_severity, sev);
}

void close_slot(EngineState& e, StreamState& s, FindingSlot& slot) {
  slot.f.closed_unix_ns = std::max<std::uint64_t>(e.now_ns, 1);
  slot.f.updated_unix_ns = slot.f.closed_unix_ns;
  slot.open = false;
  ++s.state_changes;
  e.closed.push_back(slot.f);
  if (e.closed.size() > e.config.closed_findings_kept) {
    e.closed.erase(e.closed.begin(), e.closed.begin() + static_cast<std::ptrdiff_t>(e.closed.size() - e.config.closed_findings_kept));
  }
  e.dirty = true;
}

}  // namespace

std::vector<std::string> unseen_keys(const EngineState& e, const StreamState& s, FindingKind kind,
                                     const std::vector<FeatureEffect>& top, const std::string& reason) {
  const auto& slot = s.findings[static_cast<std::size_t>(kind)];
  std::vector<std::string> out;
  if (!slot.open) return out;
  if (top.empty()) {
    if (!has(slot.seen, "reason:" + reason)) out.push_back("reason:" + reason);
    return out;
  }
  // Only the head that the finding reports counts: a feature ranked beyond it is not "among the
  // top ones", and its rising later into the head is judged then.
  const std::size_t n = std::min<std::size_t>(top.size(), e.config.top_features);
  for (std::size_t i = 0; i < n; ++i) {
    auto k = key_of(kind, top[i]);
    if (!has(slot.seen, k) && !has(out, k)) out.push_back(std::move(k));
  }
  return out;
}

Onset window_onset(const StreamState& s, const std::string& feature) {
  // The change showed somewhere in the window: as late as its last record.
  Onset o{s.window_first_ns, "window", s.rec_ns - std::min(s.rec_ns, s.window_first_ns)};
  for (const auto& f : s.feats) {
    if (f.name != feature || f.kind != FeatureKind::numeric) continue;
    // The CUSUM's change point, when it lies in the previous window or later: the earlier of its
    // first alarm in that span and where its larger side was last 0.
    const std::uint64_t floor = s.prev_window_first_ns ? s.prev_window_first_ns : s.window_first_ns;
    std::uint64_t best = f.alarm_onset_ns >= floor ? f.alarm_onset_ns : 0;
    std::uint64_t resolution = 2 * s.block_ns;
    // The chart nearest to alarming, while its run is in progress: where its larger side left 0.
    const Cusum* near = nullptr;
    for (const auto& ch : f.cusum) {
      if (ch.score() > 0 && (!near || ch.ratio() > near->ratio())) near = &ch;
    }
    if (near) {
      const Onset c = s.clock.at(near->current_onset_record(), s.rec_ns, "cusum");
      if (c.unix_ns != 0 && c.unix_ns >= floor && (best == 0 || c.unix_ns < best)) {
        best = c.unix_ns;
        resolution = c.resolution_ns;
      }
    }
    if (best != 0) o = {best, "cusum", resolution};
    break;
  }
  return o;
}

void raise_finding(EngineState& e, StreamState& s, FindingKind kind, Severity sev, std::string reason, std::string summary,
           std::vector<FeatureEffect> top, std::uint64_t window_records, Onset onset) {
  auto& slot = s.findings[static_cast<std::size_t>(kind)];
  std::uint64_t supersedes = 0;
  if (slot.open) {
    const bool new_keys = !unseen_keys(e, s, kind, top, reason).empty();
    const bool worse = static_cast<int>(sev) > static_cast<int>(slot.seen_severity);
    // The first window close after a fast look opened the finding completes it: the look
    // reported the features significant in its own short segments, the close ranks every feature
    // that drifted in the window, the same change seen whole (engine_looks.cpp). Later closes
    // judge material changes as usual.
    const bool completes_look = slot.f.reason == "segment_mean" && reason != "segment_mean";
    if ((new_keys || worse) && !completes_look) {
      supersedes = slot.f.id;
      // The same change grown worse keeps its onset; a new one brings its own.
      if (!new_keys) onset = {slot.f.onset_unix_ns, nullptr, slot.f.onset_resolution_ns};
      close_slot(e, s, slot);
      ++e.counters.findings_superseded;
    }
  }
  if (!slot.open) {
    const std::string basis = onset.basis ? onset.basis : slot.f.onset_basis;
    slot.f = Finding{};
    slot.f.id = e.next_finding_id++;
    slot.f.stream = s.name;
    slot.f.component = s.component;
    slot.f.kind = kind;
    slot.f.opened_unix_ns = e.now_ns;
    // Never after the opening (a producer clock ahead of ours), 0 = the opening itself.
    slot.f.onset_unix_ns = onset.unix_ns != 0 ? std::min(onset.unix_ns, e.now_ns) : e.now_ns;
    slot.f.onset_basis = onset.unix_ns != 0 ? basis : "opened";
    slot.f.onset_resolution_ns = onset.unix_ns != 0 ? onset.resolution_ns : 0;
    slot.f.supersedes = supersedes;
    if (supersedes == 0) {
      slot.seen.clear();
      slot.seen_severity = Severity::info;
    }
    slot.open = true;
    ++e.counters.findings_opened;
  }
  remember(slot, kind, top, reason, sev);
  if (top.size() > e.config.top_features) top.resize(e.config.top_features);
  slot.f.reason = std::move(reason);
  slot.f.severity = sev;
  slot.f.summary = std::move(summary);
  slot.f.top = std::move(top);
  slot.f.window_records = window_records;
  slot.f.updated_unix_ns = e.now_ns;
  slot.clean = 0;
  ++s.state_changes;
  e.dirty = true;
}

void settle_finding(EngineState& e, StreamState& s, FindingKind kind, std::uint32_t clear_after) {
  auto& slot = s.findings[static_cast<std::size_t>(kind)];
  slot.hits = 0;
  if (!slot.open) return;
  if (++slot.clean < clear_after) return;
  close_slot(e, s, slot);
}

}  // namespace mltap::detectors
