#include "agent/detectors/engine.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include "agent/detectors/engine_state.hpp"
#include "core/time.hpp"

namespace mltap::detectors {
namespace {

using core::DetectorSnapshot;
using core::DetectorStreamSnapshot;

constexpr double kGapMemoryNs = 3600e9;  // the usual interval forgets with a 1 h time constant
// A record timestamp further than this from its arrival dates nothing (onsets use the arrival).
constexpr std::uint64_t kRecordClockSlackNs = 600'000'000'000ULL;

}  // namespace

// A new stream: its settings, and its reference when a profile file is configured for it.
// Nullptr (and counted) beyond max_streams.
StreamState* create_stream(EngineState& e, const core::StreamInfo& info) {
  if (e.streams.size() >= e.config.max_streams) {
    if (std::find(e.cut_names.begin(), e.cut_names.end(), info.name) == e.cut_names.end()) {
      if (e.cut_names.size() < 4096) e.cut_names.push_back(info.name);
      ++e.counters.streams_cut;
    }
    return nullptr;
  }
  auto s = std::make_unique<StreamState>();
  s->name = info.name;
  s->component = info.component;
  s->kind = info.kind;
  s->declared_shape = info.row_shape;
  s->declared_names = info.feature_names;
  s->st = e.config.settings_for(info.name);
  if (!s->st.enabled || info.kind == format::StreamKind::raw) s->analyzable = false;
  auto it = e.preloaded.find(info.name);
  if (it != e.preloaded.end()) {
    const auto& p = *it->second;
    s->ref_path = s->st.reference.empty() ? std::string("(set by caller)") : s->st.reference;
    init_from_profile(e, *s, p, ReferenceSource::file);
    if (p.layout == ProfileLayout::features && info.feature_names.size() == p.columns.size()) {
      // Map columns by name when the producer declares the same names in another order.
      std::set<std::string> a(info.feature_names.begin(), info.feature_names.end());
      std::set<std::string> c(p.columns.begin(), p.columns.end());
      if (a == c) {
        for (auto& f : s->feats) {
          const auto pos = std::find(info.feature_names.begin(), info.feature_names.end(), f.name);
          f.column = static_cast<std::uint32_t>(pos - info.feature_names.begin());
        }
      } else {
        raise_finding(
            e, *s, FindingKind::schema_change, Severity::warning, "feature_names",
            "the stream's feature names differ from the reference's; compared by position", {}, 0);
        s->window_mismatch = 1;
      }
    }
  }
  e.by_name[s->name] = e.streams.size();
  e.streams.push_back(std::move(s));
  return e.streams.back().get();
}

namespace {

// A time window ends once it is old enough and holds min_window_records.
void close_timed_window(EngineState& e, StreamState& s) {
  const auto& st = s.st;
  if (s.ready && st.window_time.count() > 0 &&
      e.now_ns - s.window_start_ns >= static_cast<std::uint64_t>(st.window_time.count()) &&
      s.window_rows + s.staged >= st.min_window_records) {
    flush_staging(e, s);
    if (s.window_rows > 0) close_window(e, s);
  }
}

// Silent for factor x the usual interval between batches (and at least min_silence).
void check_staleness(EngineState& e, StreamState& s) {
  const auto& st = s.st;
  if (!st.staleness.enabled || s.batches < st.staleness.min_batches) return;
  const double silent = static_cast<double>(e.now_ns - std::min(e.now_ns, s.last_arrival));
  const double limit = std::max(static_cast<double>(st.staleness.min_silence.count()),
                                st.staleness.factor * s.usual_gap);
  if (silent > limit) {
    raise_finding(e, s, FindingKind::staleness, Severity::warning, "silent",
                  "no records for " + fmt(silent / 1e9) + " s (usual interval up to " +
                      fmt(s.usual_gap / 1e9) + " s)",
                  {}, 0, Onset{s.last_arrival, "last_record"});
  }
}

// At the end of each period: the rate against an EWMA baseline of the periods before.
void check_throughput(EngineState& e, StreamState& s) {
  const auto& st = s.st;
  if (!st.throughput.enabled || s.period_start == 0 || e.now_ns <= s.period_start ||
      e.now_ns - s.period_start < static_cast<std::uint64_t>(st.throughput.period.count())) {
    return;
  }
  const double secs = static_cast<double>(e.now_ns - s.period_start) / 1e9;
  const double rate = static_cast<double>(s.period_rows) / secs;
  bool flagged = false;
  if (s.periods >= st.throughput.warmup_periods && s.baseline > 0) {
    const double expected = s.baseline * secs;
    if (rate < s.baseline / st.throughput.factor && expected >= st.throughput.min_expected) {
      raise_finding(e, s, FindingKind::throughput, Severity::warning, "drop",
                    "rate " + fmt(rate) + "/s, usual " + fmt(s.baseline) + "/s", {}, s.period_rows,
                    Onset{s.period_start, "period", e.now_ns - std::min(e.now_ns, s.period_start)});
      flagged = true;
    } else if (rate > s.baseline * st.throughput.factor &&
               static_cast<double>(s.period_rows) >= st.throughput.min_expected) {
      raise_finding(e, s, FindingKind::throughput, Severity::warning, "spike",
                    "rate " + fmt(rate) + "/s, usual " + fmt(s.baseline) + "/s", {}, s.period_rows,
                    Onset{s.period_start, "period", e.now_ns - std::min(e.now_ns, s.period_start)});
      flagged = true;
    }
  }
  if (!flagged) settle_finding(e, s, FindingKind::throughput, 1);
  s.baseline = s.periods == 0 ? rate : s.baseline + st.throughput.alpha * (rate - s.baseline);
  ++s.periods;
  s.period_rows = 0;
  s.period_start = e.now_ns;
}

std::shared_ptr<const DetectorStreamSnapshot> stream_snapshot(const StreamState& s) {
  auto ss = std::make_shared<DetectorStreamSnapshot>();
  ss->name = s.name;
  ss->component = s.component;
  ss->kind = std::string(format::stream_kind_name(s.kind));
  ss->layout = std::string(layout_name(s.layout));
  ss->reference = s.ref_source;
  ss->reference_path = s.ref_path;
  ss->reference_error = s.ref_error;
  ss->reference_rows = s.ref_rows;
  ss->pin_progress = s.pinned;
  ss->pin_target = s.pin_target;
  ss->records_total = s.records_total;
  ss->records_rejected = s.records_rejected;
  ss->windows_closed = s.windows_closed;
  ss->last_window_records = s.last_window_records;
  ss->last_window_end_unix_ns = s.last_window_end_ns;
  ss->drift_detected = s.drift_detected;
  ss->drifted_features = s.drifted;
  std::uint32_t analyzed = 0;
  for (const auto& f : s.feats) analyzed += f.enabled;
  ss->features_analyzed = analyzed;
  ss->features_cut = s.features_cut;
  ss->embedding_mean_shift = s.emb_shift;
  ss->embedding_mean_cosine = s.emb_cos;
  const std::array<std::uint64_t, 4> key{s.windows_closed, s.pinned, s.ref_rows,
                                          s.feats.size() + (std::uint64_t{s.ready} << 32)};
  if (key != s.memory_key) {
    s.memory_key = key;
    s.memory_published = s.memory_bytes();
  }
  ss->memory_bytes = s.memory_published;
  ss->features = s.results;
  ss->fleet = s.fleet;
  return ss;
}

}  // namespace

DetectorEngine::DetectorEngine(EngineConfig config)
    : reload_(std::make_unique<ReloadMailbox>()),
      state_(std::make_unique<EngineState>(std::move(config))) {
  state_->preloaded = load_references(state_->config);
  published_ = std::make_shared<const DetectorSnapshot>();
}

DetectorEngine::~DetectorEngine() = default;

const EngineConfig& DetectorEngine::config() const noexcept { return state_->config; }

void DetectorEngine::publish_now() { publish(state_->now_ns, true); }

void DetectorEngine::set_reference(const std::string& stream,
                                   std::shared_ptr<const ReferenceProfile> profile,
                                   std::string path) {
  auto& config = state_->config;
  state_->preloaded[stream] = std::move(profile);
  for (auto& [name, st] : config.streams) {
    if (name == stream) st.reference = path;
  }
  if (!path.empty() && config.settings_for(stream).reference.empty()) {
    auto st = config.defaults;
    st.reference = path;
    config.streams.emplace_back(stream, st);
  }
}

StreamState* DetectorEngine::stream_for(const core::DecodedBatch& b) {
  EngineState& e = *state_;
  if (b.stream == e.last_info && e.last_index < e.streams.size() &&
      e.streams[e.last_index]->name == b.stream->name) {
    return e.streams[e.last_index].get();
  }
  auto it = e.by_name.find(b.stream->name);
  if (it == e.by_name.end()) {
    if (!create_stream(e, *b.stream)) return nullptr;
    it = e.by_name.find(b.stream->name);
  }
  e.last_info = b.stream;
  e.last_index = it->second;
  return e.streams[it->second].get();
}

void DetectorEngine::on_batch(const core::DecodedBatch& b) {
  EngineState& e = *state_;
  if (reload_->staged.load(std::memory_order_acquire)) apply_reload();
  if (!e.config.enabled || !b.stream) return;
  if (b.backlog) return;  // a previous run's leftovers: never analyzed, never a reference
  if (b.values.size() < b.rows * b.cols) return;  // the reader guarantees this; stay safe anyway
  StreamState* s = stream_for(b);
  if (!s) {
    e.counters.records_cut += b.rows;
    return;
  }
  s->last_record_ns = std::max(s->last_record_ns, b.timestamp_ns);
  const std::uint64_t arrival =
      e.ticked ? e.now_ns : (b.timestamp_ns ? b.timestamp_ns : core::unix_now_ns());
  if (!e.ticked) e.now_ns = std::max(e.now_ns, arrival);
  if (s->batches > 0 && arrival >= s->last_arrival) {
    const double gap = static_cast<double>(arrival - s->last_arrival);
    s->usual_gap = std::max(gap, s->usual_gap * std::exp(-gap / kGapMemoryNs));
  }
  s->last_arrival = arrival;
  // The records' own time dates onsets; a producer clock far from ours is not believed.
  s->rec_ns = b.timestamp_ns != 0 && b.timestamp_ns + kRecordClockSlackNs >= arrival &&
                      b.timestamp_ns <= arrival + kRecordClockSlackNs
                  ? b.timestamp_ns
                  : arrival;
  ++s->batches;
  s->records_total += b.rows;
  s->period_rows += b.rows;
  if (s->period_start == 0) s->period_start = arrival;
  if (s->findings[static_cast<std::size_t>(FindingKind::staleness)].open) {
    settle_finding(e, *s, FindingKind::staleness, 1);
  }
  if (s->in_cols == 0 && s->ref_source == ReferenceSource::pending) {
    if (b.cols == 0) return;
    init_pinning(e, *s, b);
  }
  if (check_schema(e, *s, b)) add_rows(e, *s, b);
  if (e.dirty) publish(e.now_ns, false);  // rate-limited by snapshot_interval
}

void DetectorEngine::on_tick(std::uint64_t now) {
  EngineState& e = *state_;
  if (reload_->staged.load(std::memory_order_acquire)) apply_reload();
  hand_over(false);
  e.ticked = true;
  e.now_ns = std::max(e.now_ns, now);
  flush_staging(e);  // staged rows wait at most a tick
  for (auto& sp : e.streams) {
    close_timed_window(e, *sp);
    check_staleness(e, *sp);
    check_throughput(e, *sp);
  }
  publish(e.now_ns, false);
}

void DetectorEngine::flush(std::uint64_t now) {
  EngineState& e = *state_;
  e.now_ns = std::max(e.now_ns, now);
  for (auto& sp : e.streams) {
    flush_staging(e, *sp);
    if (sp->ready && sp->window_rows > 0) close_window(e, *sp);
  }
  publish(e.now_ns, true);
}

void DetectorEngine::publish(std::uint64_t now, bool force) {
  EngineState& e = *state_;
  if (!force) {
    if (!e.dirty && e.sequence > 0 && now - e.last_publish_ns < 1000000000ULL) return;
    if (e.sequence > 0 &&
        now - e.last_publish_ns < static_cast<std::uint64_t>(e.config.snapshot_interval.count())) {
      return;
    }
  }
  auto snap = std::make_shared<DetectorSnapshot>();
  snap->generated_unix_ns = now;
  snap->sequence = ++e.sequence;
  snap->counters = e.counters;
  for (const auto& sp : e.streams) {
    refresh_fleet(*sp);
    snap->streams.push_back(stream_snapshot(*sp));
    for (const auto& slot : sp->findings) {
      if (slot.open) snap->open_findings.push_back(slot.f);
    }
  }
  std::sort(snap->open_findings.begin(), snap->open_findings.end(),
            [](const Finding& a, const Finding& b) { return a.id < b.id; });
  snap->closed_findings.assign(e.closed.rbegin(), e.closed.rend());
  pending_ = std::move(snap);
  hand_over(force);
  e.last_publish_ns = now;
  e.dirty = false;
}

void refresh_fleet(StreamState& s) {
  // Rows reach the windows in chunks (staging): key on what the windows counted.
  const std::uint64_t key = s.window_rows + (s.windows_closed << 32);
  if (s.fleet_records == key) return;  // nothing counted since
  s.fleet_records = key;
  auto out = std::make_shared<std::vector<core::FleetFeatureBins>>();
  for (const auto& f : s.feats) {
    if (!f.fleet) continue;
    core::FleetFeatureBins b;
    b.feature = f.name;
    b.edges_id = f.fleet->edges_id;
    b.reference_share = f.fleet->reference_share;
    b.counts = f.fleet->closed;
    fleet_add(*f.fleet, f.kind == FeatureKind::numeric ? f.ncur.counts : f.ccur().counts, b.counts);
    out->push_back(std::move(b));
  }
  if (out->empty()) {
    s.fleet.reset();
  } else {
    s.fleet = std::move(out);
  }
}

void DetectorEngine::hand_over(bool wait) {
  if (!pending_) return;
  std::unique_lock<std::mutex> lock(publish_mu_, std::defer_lock);
  if (wait) {
    lock.lock();
  } else if (!lock.try_lock()) {
    return;  // a reader is copying the pointer: hand over on the next tick
  }
  published_.swap(pending_);
  lock.unlock();
  pending_.reset();  // the previous snapshot is freed outside the lock
}

std::uint64_t DetectorEngine::memory_bytes() const noexcept {
  std::uint64_t b = state_->staging.capacity() * sizeof(double);
  for (const auto& s : state_->streams) b += s->memory_bytes();
  return b;
}

}  // namespace mltap::detectors
