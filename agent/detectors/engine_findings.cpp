#include <algorithm>

#include "agent/detectors/engine_state.hpp"

namespace mltap::detectors {

void raise_finding(EngineState& e, StreamState& s, FindingKind kind, Severity sev, std::string reason, std::string summary,
           std::vector<FeatureEffect> top, std::uint64_t window_records) {
  auto& slot = s.findings[static_cast<std::size_t>(kind)];
  if (!slot.open) {
    slot.f = Finding{};
    slot.f.id = e.next_finding_id++;
    slot.f.stream = s.name;
    slot.f.component = s.component;
    slot.f.kind = kind;
    slot.f.opened_unix_ns = e.now_ns;
    slot.open = true;
    ++e.counters.findings_opened;
  }
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

}  // namespace mltap::detectors
