// Checkpoints of the engine's state that users rely on across restarts: per stream the pinned
// reference and the open findings, and the next finding id. Without them a restarted agent
// (upgrade, crash, kill -9) would pin its reference from whatever the stream sends now, which
// during an incident is the drifted data, and close the incident silently.
//
// Kept: what cannot be rebuilt from the data that follows. Not kept: windows in progress and the
// sequential detectors' sums (they restart empty and refill within a window), counters (they
// reset, as Prometheus counters may), a reference still being pinned (pinned again).
#include <algorithm>
#include <cmath>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "agent/detectors/engine.hpp"
#include "agent/detectors/engine_state.hpp"
#include "core/finding_json.hpp"
#include "core/time.hpp"

namespace mltap::detectors {
namespace {

using json = nlohmann::json;

// Version 1. Stream: {"stream", "component", "kind", "row_shape", "feature_names",
// "last_record_unix_ns", "findings": [...]}, rewritten at each change. A finding's "onset_unix_ns",
// "onset_basis", "onset_resolution_ns", "supersedes", "seen" and "seen_severity" came later and are optional: documents
// without them load (onset unknown: the opening; seen: the finding's top features or reason). Its pinned reference:
// {"stream", "profile": profile document}, written once (it can be large: bins of every
// feature). Engine: {"next_finding_id"}.
constexpr std::uint32_t kStateVersion = 1;
constexpr const char* kEngineDoc = "detectors.engine";
constexpr const char* kReferencePrefix = "detectors.reference-";
constexpr const char* kStreamPrefix = "detectors.stream-";

// Stream names are free text (slashes, capitals): documents are named by a hash of the name, the
// name itself is inside and checked on restore.
std::string doc_name(const char* prefix, const std::string& stream) {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a 64
  for (unsigned char c : stream) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return std::string(prefix) + buf;
}

json finding_to_json(const FindingSlot& slot) {
  json j = core::finding_state_json(slot.f);
  j["hits"] = slot.hits;
  j["clean"] = slot.clean;
  j["seen"] = slot.seen;
  j["seen_severity"] = std::string(core::severity_name(slot.seen_severity));
  return j;
}

// Throws json::exception (type errors) or std::invalid_argument on a malformed finding.
FindingSlot finding_from_json(const json& j, const std::string& stream, const std::string& component) {
  FindingSlot slot;
  slot.f = core::finding_from_state_json(j, stream, component);
  Finding& f = slot.f;
  // The detectors checkpoint their own kinds only (a performance finding is not theirs).
  if (static_cast<std::size_t>(f.kind) >= kKinds)
    throw std::invalid_argument("unknown finding kind '" + std::string(core::finding_kind_name(f.kind)) + "'");
  slot.hits = j.value("hits", 0U);
  slot.clean = j.value("clean", 0U);
  if (auto it = j.find("seen"); it != j.end()) {
    for (const auto& k : *it) {
      if (slot.seen.size() < kMaxSeen) slot.seen.push_back(k.get<std::string>());
    }
  } else {  // an older document: what the finding shows is what was seen
    if (f.top.empty()) slot.seen.push_back("reason:" + f.reason);
    for (const auto& t : f.top)
      slot.seen.push_back(f.kind == FindingKind::data_quality ? t.feature + "/" + t.method : t.feature);
  }
  slot.seen_severity = f.severity;
  const auto seen_sev = j.value("seen_severity", std::string());
  for (auto s : {Severity::info, Severity::warning, Severity::critical}) {
    if (core::severity_name(s) == seen_sev) slot.seen_severity = std::max(s, f.severity);
  }
  slot.open = true;
  return slot;
}

std::string stream_document(const StreamState& s) {
  json findings = json::array();
  for (const auto& slot : s.findings) {
    if (slot.open) findings.push_back(finding_to_json(slot));
  }
  json doc = {{"stream", s.name},
              {"component", s.component},
              {"kind", std::string(format::stream_kind_name(s.kind))},
              {"row_shape", s.declared_shape},
              {"feature_names", s.declared_names},
              {"last_record_unix_ns", s.last_record_ns},
              {"findings", std::move(findings)}};
  return doc.dump();
}

}  // namespace

std::uint32_t DetectorEngine::state_version() const { return kStateVersion; }

std::vector<core::StateDocument> DetectorEngine::checkpoint() {
  EngineState& e = *state_;
  std::vector<core::StateDocument> docs;
  for (auto& sp : e.streams) {
    StreamState& s = *sp;
    // While a finding is open, the newest record analyzed too (last_record_unix_ns); otherwise
    // only real changes.
    bool open = false;
    for (const auto& slot : s.findings) open = open || slot.open;
    if (s.ref_source == ReferenceSource::pinned && !s.pinned_json.empty() && !s.pinned_saved) {
      // The profile text was made once, at pinning: spliced in, not parsed again here.
      s.pinned_saved = true;
      docs.push_back({doc_name(kReferencePrefix, s.name), kStateVersion,
                      "{\"stream\":" + json(s.name).dump() + ",\"profile\":" + s.pinned_json + "}"});
      std::string().swap(s.pinned_json);  // handed over: the store keeps it, not each stream
    }
    if (s.state_changes == s.state_saved && !(open && s.last_record_ns != s.saved_record_ns)) continue;
    s.state_saved = s.state_changes;
    s.saved_record_ns = s.last_record_ns;
    docs.push_back({doc_name(kStreamPrefix, s.name), kStateVersion, stream_document(s)});
  }
  if (e.next_finding_id != e.saved_next_finding_id) {
    e.saved_next_finding_id = e.next_finding_id;
    docs.push_back({kEngineDoc, kStateVersion,
                    json{{"next_finding_id", e.next_finding_id}}.dump()});
  }
  return docs;
}

std::vector<std::string> DetectorEngine::restore(
    const std::vector<std::pair<std::string, core::StateReadResult>>& stored) {
  EngineState& e = *state_;
  std::vector<std::string> problems;
  std::uint64_t next_id = e.next_finding_id;
  // References first: a stream document takes its reference from them.
  std::unordered_map<std::string, std::pair<std::string, bool>> refs;  // stream -> profile, used
  for (const auto& [name, r] : stored) {
    if (r.status != core::StateReadResult::Status::ok || name.rfind(kReferencePrefix, 0) != 0) continue;
    try {
      const json j = json::parse(r.data);
      const auto stream = j.at("stream").get<std::string>();
      if (doc_name(kReferencePrefix, stream) != name)
        throw std::invalid_argument("its stream name does not match the document name");
      refs[stream] = {j.at("profile").dump(), false};
    } catch (const std::exception& ex) {
      problems.push_back("state document '" + name + "' cannot be used (" + ex.what() + "); ignored");
    }
  }
  for (const auto& [name, r] : stored) {
    if (r.status != core::StateReadResult::Status::ok) {
      if (r.status == core::StateReadResult::Status::unusable)
        problems.push_back("starting without state document '" + name + "': " + r.detail);
      continue;
    }
    if (name.rfind(kReferencePrefix, 0) == 0) continue;
    try {
      const json j = json::parse(r.data);
      if (name == kEngineDoc) {
        next_id = std::max(next_id, j.at("next_finding_id").get<std::uint64_t>());
        continue;
      }
      if (name.rfind(kStreamPrefix, 0) != 0) {
        problems.push_back("state document '" + name + "' is not one of the detectors'; ignored");
        continue;
      }
      core::StreamInfo info;
      info.name = j.at("stream").get<std::string>();
      if (info.name.empty() || doc_name(kStreamPrefix, info.name) != name)
        throw std::invalid_argument("its stream name does not match the document name");
      if (e.by_name.count(info.name)) continue;
      info.component = j.at("component").get<std::string>();
      const auto kind = j.at("kind").get<std::string>();
      bool known = false;
      for (auto k : {format::StreamKind::features, format::StreamKind::predictions,
                     format::StreamKind::labels, format::StreamKind::embeddings,
                     format::StreamKind::raw}) {
        if (format::stream_kind_name(k) == kind) {
          info.kind = k;
          known = true;
        }
      }
      if (!known) throw std::invalid_argument("unknown stream kind '" + kind + "'");
      info.row_shape = j.at("row_shape").get<std::vector<std::uint32_t>>();
      info.feature_names = j.at("feature_names").get<std::vector<std::string>>();
      // Parse everything before the stream exists, so that a bad document changes nothing.
      std::vector<FindingSlot> slots;
      for (const auto& fj : j.at("findings")) slots.push_back(finding_from_json(fj, info.name, info.component));
      std::optional<ReferenceProfile> ref;
      std::string ref_problem, ref_text;
      if (auto it = refs.find(info.name); it != refs.end()) {
        it->second.second = true;
        ref_text = it->second.first;
        try {
          ref = profile_from_json_text(ref_text, "pinned reference of '" + info.name + "'");
        } catch (const ProfileError& ex) {
          ref_problem = ex.what();
        }
      }
      StreamState* s = create_stream(e, info);
      if (!s) {
        problems.push_back("stream '" + info.name + "' not restored: max_streams reached");
        continue;
      }
      if (!ref_problem.empty()) {
        problems.push_back("stream '" + info.name + "': its pinned reference is unusable (" +
                           ref_problem + "); pinning again");
      } else if (ref && s->analyzable && s->ref_source == ReferenceSource::pending) {
        init_from_profile(e, *s, *ref, ReferenceSource::pinned);
        s->in_cols = ref->column_count();
        s->pinned = s->pin_target = ref->rows;
        s->pinned_saved = true;  // it is in the store already (the text is not kept)
        s->window_start_ns = core::unix_now_ns();
      }
      for (auto& slot : slots) {
        next_id = std::max(next_id, slot.f.id + 1);
        s->findings[static_cast<std::size_t>(slot.f.kind)] = std::move(slot);
      }
      // Records analyzed before the restart are not given again: ingest resumes each ring at its
      // saved read position, checkpointed at the same instant as this document.
      s->last_record_ns = s->saved_record_ns = j.value("last_record_unix_ns", std::uint64_t{0});
      // What was restored is what is stored: nothing to write until it changes.
      s->state_saved = s->state_changes;
    } catch (const std::exception& ex) {
      problems.push_back("state document '" + name + "' cannot be used (" + ex.what() + "); ignored");
    }
  }
  for (const auto& [stream, ref] : refs) {
    if (!ref.second)
      problems.push_back("the pinned reference of '" + stream + "' has no stream document; ignored");
  }
  e.next_finding_id = next_id;
  e.saved_next_finding_id = next_id;
  e.dirty = true;
  publish(e.now_ns, true);
  return problems;
}

}  // namespace mltap::detectors
