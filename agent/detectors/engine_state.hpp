// The detector engine's state and the stages that work on it, internal to agent/detectors
// (engine.hpp is the interface). Everything here runs on the ingest thread only.
//
// A batch goes: schema check (engine_schema.cpp) -> row intake in column-wise chunks
// (engine_rows.cpp), which pins a reference from the first records (engine_reference.cpp), ends
// sequential blocks (engine_sequential.cpp) and closes windows (engine_window.cpp); every stage
// opens and closes findings through engine_findings.cpp. engine.cpp holds the engine itself:
// stream lookup, ticks (staleness, throughput, timed windows) and publishing snapshots.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/detectors/binning.hpp"
#include "agent/detectors/config.hpp"
#include "agent/detectors/fleet_bins.hpp"
#include "agent/detectors/noise.hpp"
#include "agent/detectors/profile.hpp"
#include "agent/detectors/stats.hpp"
#include "core/batch.hpp"
#include "core/detector_state.hpp"
#include "core/finding.hpp"

namespace mltap::detectors {

using core::FeatureEffect;
using core::FeatureKind;
using core::FeatureResult;
using core::Finding;
using core::FindingKind;
using core::ReferenceSource;
using core::Severity;

inline constexpr std::size_t kChunk = 64;  // rows processed column-wise at a time
inline constexpr std::size_t kStageRows = 16;  // small records staged per stream before a block
inline constexpr std::size_t kKinds = 8;   // finding kinds (core::FindingKind)
// Fast looks (engine_looks.cpp): levels of trailing segments, of 2, 4, ... 2^kLookLevels times
// drift.look_records records (at most window_records).
inline constexpr std::size_t kLookLevels = 7;

// Numbers in finding texts: "%.4g".
inline std::string fmt(double v) { return core::format_number(v); }

// One analyzed feature of a stream: its reference, current and previous window, sequential
// detectors.
struct Feature {
  std::string name;
  FeatureKind kind = FeatureKind::numeric;
  bool enabled = true;
  std::uint32_t column = 0;
  std::unique_ptr<PinnedFeatureBuilder> pin;
  NumericReference num;
  NumericWindow ncur, nprev;
  // Categorical features only (allocated when the reference makes the feature categorical): a
  // numeric feature does not carry ~450 bytes of empty categorical state (issue 12).
  struct Categorical {
    CategoricalReference ref;
    CategoricalWindow cur, prev;
  };
  std::unique_ptr<Categorical> categorical;
  CategoricalReference& cat() noexcept { return categorical->ref; }
  const CategoricalReference& cat() const noexcept { return categorical->ref; }
  CategoricalWindow& ccur() noexcept { return categorical->cur; }
  const CategoricalWindow& ccur() const noexcept { return categorical->cur; }
  CategoricalWindow& cprev() noexcept { return categorical->prev; }
  const CategoricalWindow& cprev() const noexcept { return categorical->prev; }
  bool has_prev = false;
  double ref_values = 0, ref_finite = 0;
  // CUSUM charts, one per sequential.shifts, on u = (clamp(x, seq_lo, seq_hi) - seq_center) *
  // seq_inv (engine_sequential.cpp: init_sequential says how these are set).
  std::vector<Cusum> cusum;
  double seq_lo = 0, seq_hi = 0, seq_center = 0, seq_inv = 0, seq_inv_ref = 0;
  PageHinkley ph;
  double seq_ratio = 0;
  // Page-Hinkley: start time of the block after which each one-sided statistic was last 0
  // ([0] up, [1] down), its change-point estimate (onset) when it alarms. CUSUM charts keep
  // their onset as a record index (Cusum::onset_record), timed by StreamState::clock.
  std::uint64_t ph_since[2] = {0, 0};
  // Onset of the first CUSUM alarm of the current run (replaced only once older than the
  // previous window): an alarm resets the statistic, so `cusum_since` alone would date a window
  // drift after it.
  std::uint64_t alarm_onset_ns = 0;
  // Fleet bins (file references only; fleet_bins.hpp): null when inactive, so that pinned
  // references do not carry an empty map per feature.
  std::unique_ptr<FleetMap> fleet;
  NoiseTable noise;  // the reference's sampling noise per decision method (noise.hpp), inline
  // Fast looks (engine_looks.cpp): the running sum of u at the reference's scale (as CUSUM
  // standardizes it, without the variance adjustment) and the count of finite values since the
  // reference (counts wrap modulo 2^32: only differences over at most a window are used), and
  // per level the two snapshots of both (StreamState::look_at says when each was taken).
  double look_sum = 0;
  std::uint32_t look_n = 0;
  std::array<std::array<double, 2>, kLookLevels> look_snap_sum{};
  std::array<std::array<std::uint32_t, 2>, kLookLevels> look_snap_n{};

  std::size_t memory_bytes() const noexcept {
    std::size_t b = sizeof(*this) + name.capacity() + (fleet ? sizeof(FleetMap) + fleet->memory_bytes() : 0);
    if (pin) b += pin->memory_bytes();
    b += num.memory_bytes() + ncur.memory_bytes() + nprev.memory_bytes() + cusum.capacity() * sizeof(Cusum);
    if (categorical) {
      b += sizeof(Categorical) + categorical->ref.memory_bytes() + categorical->cur.memory_bytes() +
           categorical->prev.memory_bytes();
    }
    return b;
  }
};

// The finding of one kind for one stream: open or not, and the windows counted towards opening
// (hits) or closing (clean) it.
struct FindingSlot {
  Finding f;
  bool open = false;
  std::uint32_t hits = 0;
  std::uint32_t clean = 0;
  std::uint64_t first_hit_onset_ns = 0;  // onset estimated at the first window of the hits
  const char* first_hit_basis = "window";
  std::uint64_t first_hit_resolution_ns = 0;
  // What this finding (and those it superseded) already reported: feature names, "feature/check"
  // for data quality, the reason where there are no features; and the highest severity. Anything
  // beyond them is a material change (engine_findings.cpp). Bounded by kMaxSeen.
  std::vector<std::string> seen;
  Severity seen_severity = Severity::info;
};
inline constexpr std::size_t kMaxSeen = 256;

// When a change began and how that was estimated (Finding::onset_unix_ns, onset_basis).
struct Onset {
  std::uint64_t unix_ns = 0;  // 0: the opening time
  const char* basis = "opened";
  std::uint64_t resolution_ns = 0;  // Finding::onset_resolution_ns
};

// Times of a stream's records, sparse: a (record index, time) note once 32 records or a second
// passed since the last one, in a ring of 32 (at least the last 1,024 records, about a CUSUM run
// at 0.25 sd); turns a CUSUM onset record into an onset time and says how much later the change
// may have begun (the span to the next note). An onset older than every note is dated at the
// oldest one.
struct RecordClock {
  static constexpr std::size_t kSize = 32;
  std::array<std::uint64_t, kSize> rec{}, ns{};
  std::size_t head = 0, count = 0;

  void note(std::uint64_t record, std::uint64_t t) noexcept {
    if (count > 0) {
      const std::size_t last = (head + kSize - 1) % kSize;
      if (record == rec[last] || (record - rec[last] < 32 && t >= ns[last] && t - ns[last] < 1'000'000'000ull)) return;
    }
    rec[head] = record;
    ns[head] = t;
    head = (head + 1) % kSize;
    count = count < kSize ? count + 1 : kSize;
  }
  // Time of `record`: the newest note at or before it (the oldest note if it is older than all).
  Onset at(std::uint64_t record, std::uint64_t now_ns, const char* basis) const noexcept {
    if (count == 0) return Onset{};
    std::size_t pick = (head + kSize - count) % kSize;  // oldest
    std::uint64_t next_ns = now_ns;
    for (std::size_t i = 0; i < count; ++i) {
      const std::size_t k = (head + kSize - 1 - i) % kSize;
      if (rec[k] <= record) {
        pick = k;
        break;
      }
      next_ns = ns[k];
    }
    if (count > 0 && rec[pick] > record) next_ns = ns[pick];  // older than every note
    return Onset{ns[pick], basis, next_ns > ns[pick] ? next_ns - ns[pick] : 0};
  }
};

// Everything the engine keeps about one stream.
struct StreamState {
  std::string name, component;
  format::StreamKind kind = format::StreamKind::features;
  std::vector<std::uint32_t> declared_shape;  // as the producer declared them: a restored
  std::vector<std::string> declared_names;    // stream is recreated from these (engine_checkpoint)
  StreamSettings st;
  ProfileLayout layout = ProfileLayout::features;
  bool analyzable = true;  // raw streams: schema, staleness, throughput only
  RowTransform transform;
  std::size_t in_cols = 0;
  std::vector<Feature> feats;
  std::uint32_t features_cut = 0;
  // reference
  ReferenceSource ref_source = ReferenceSource::pending;
  std::string ref_path, ref_error;
  std::uint64_t ref_rows = 0;
  std::string ref_dtype;
  bool ready = false;
  std::uint64_t pin_target = 0, pin_phase_a = 0, pinned = 0;
  // The pinned reference as a profile document, kept until a checkpoint hands it to the state
  // store (then freed: ~8 KB per feature of text). Without a state directory it stays.
  std::string pinned_json;
  bool pinned_saved = false;  // pinned_json handed to a checkpoint (written once, not per change)
  // checkpoints: state_changes counts changes of what is kept (reference, open findings)
  std::uint64_t state_changes = 1, state_saved = 0;
  // Newest producer timestamp analyzed, and as last checkpointed (in the stream document). A
  // restarted agent does not replay what was analyzed: ingest resumes each ring at its saved read
  // position (agent/ingest, "ingest.positions").
  std::uint64_t last_record_ns = 0, saved_record_ns = 0;
  // schema
  format::DType expected_dtype = format::DType::invalid;
  std::vector<std::uint32_t> expected_shape;
  std::uint64_t window_mismatch = 0;
  std::string mismatch_reason, mismatch_detail;
  // Rows of this stream waiting in the engine's staging buffer (EngineState::staging; 0 unless
  // this stream is its owner), and derived rows (transformed layouts).
  std::vector<double> derived;
  std::size_t staged = 0;
  std::size_t chunk = kChunk;  // rows per column-wise block; fewer for very wide rows
  // windows
  std::uint64_t window_rows = 0, window_start_ns = 0, windows_closed = 0, block_rows = 0;
  // Index of the next record through the intake (pinning included): CUSUM's alarm and onset records.
  std::uint64_t record_index = 0;
  std::uint64_t last_window_records = 0, last_window_end_ns = 0;
  // Onset estimation: time of the records being analyzed (the batch's producer timestamp when
  // plausible, else its arrival), of the current block's and window's first record, and of the
  // previous window's first record.
  std::uint64_t rec_ns = 0, block_first_ns = 0, window_first_ns = 0, prev_window_first_ns = 0;
  std::uint64_t block_ns = 0;  // duration of the last block (CUSUM onset resolution: two of them)
  Onset seq_onset;  // earliest sequential alarm since the last window close
  RecordClock clock;  // record index -> time, for CUSUM onsets
  // Fast looks (engine_looks.cpp): active (set with the reference), levels in use, records
  // between looks, the z a segment needs to pass the prescreen (squared), the look count and the
  // last look's record, and per level the record index of each of its two snapshots.
  bool looks = false;
  std::uint32_t look_levels = 0;
  std::uint64_t look_every = 0, look_last = 0, look_count = 0;
  double look_z2 = 0, look_alpha = 0;
  std::array<std::array<std::uint64_t, 2>, kLookLevels> look_at{};
  // embeddings
  std::size_t mean_dims = 0;
  std::vector<double> ref_mean, win_sum, pin_sum, pin_sumsq;
  double ref_total_var = 0;
  std::uint64_t win_vec_rows = 0, pin_vec_rows = 0;
  double emb_shift = NAN, emb_cos = NAN;
  // time
  std::uint64_t last_arrival = 0, batches = 0;
  double usual_gap = 0;
  std::uint64_t period_start = 0, period_rows = 0;
  double baseline = 0;
  std::uint32_t periods = 0;
  // findings by kind
  std::array<FindingSlot, kKinds> findings;
  std::vector<FeatureEffect> seq_alarms;  // since the last window close
  // totals and results
  std::uint64_t records_total = 0, records_rejected = 0;
  bool drift_detected = false;
  std::uint32_t drifted = 0;
  std::shared_ptr<const std::vector<FeatureResult>> results =
      std::make_shared<std::vector<FeatureResult>>();
  // fleet bins as last published, rebuilt when records arrived since (engine.cpp)
  std::shared_ptr<const std::vector<core::FleetFeatureBins>> fleet;
  std::uint64_t fleet_records = ~std::uint64_t{0};
  // memory_bytes() as last published, and when: it walks every feature's arrays (35 KiB of
  // records per 32-feature stream, all of it out of the cache at 1,000 streams), and it changes
  // only when a window closes or the reference or pinning moves (engine.cpp stream_snapshot).
  mutable std::size_t memory_published = 0;
  mutable std::array<std::uint64_t, 4> memory_key{~std::uint64_t{0}, 0, 0, 0};

  std::size_t memory_bytes() const noexcept {
    std::size_t b =
        sizeof(*this) + (derived.capacity() + ref_mean.capacity() +
                         win_sum.capacity() + pin_sum.capacity() + pin_sumsq.capacity()) *
                            sizeof(double) +
        pinned_json.capacity() + name.capacity() + component.capacity();
    for (const auto& f : feats) b += f.memory_bytes();
    return b;
  }
};

// The engine's state on the ingest thread (DetectorEngine holds it; readers see only snapshots).
struct EngineState {
  explicit EngineState(EngineConfig c) : config(std::move(c)) {}
  EngineConfig config;
  std::vector<std::unique_ptr<StreamState>> streams;
  std::unordered_map<std::string, std::size_t> by_name;
  const core::StreamInfo* last_info = nullptr;
  std::size_t last_index = 0;
  std::unordered_map<std::string, std::shared_ptr<const ReferenceProfile>> preloaded;
  std::vector<std::string> cut_names;
  core::DetectorCounters counters;
  std::uint64_t now_ns = 0;
  bool ticked = false;
  std::uint64_t last_publish_ns = 0;
  bool dirty = true;
  std::uint64_t next_finding_id = 1;
  std::uint64_t sequence = 0;
  std::vector<Finding> closed;  // ring of recently closed findings (oldest first)
  std::uint64_t saved_next_finding_id = 0;  // as last checkpointed
  // Small records of one stream at a time wait here for a column-wise block (engine_rows.cpp):
  // one buffer for the engine instead of one per stream (kStageRows rows of every column: 4 KiB
  // of a 32-feature stream's 100 KiB). Ingest delivers a stream's records together (each poll
  // of its ring), so staged rows are processed when another stream's record comes, when the
  // block is full, and at every tick: a stream's rows still reach its windows in order.
  std::vector<double> staging;
  StreamState* stage_owner = nullptr;
};

// A reload handed from the thread that asked for it (SIGHUP) to the writer thread
// (engine_reload.cpp): the writer only tests `staged` per batch.
struct ReloadMailbox {
  std::atomic<bool> staged{false};
  std::mutex mu;
  std::condition_variable done;
  // guarded by mu
  std::optional<EngineConfig> config;
  std::unordered_map<std::string, std::shared_ptr<const ReferenceProfile>> profiles;
  std::uint64_t requested = 0, applied = 0;
  std::vector<std::string> report;  // of the last applied reload
};

// Every reference file the configuration names, loaded (engine_reload.cpp). Throws ProfileError
// naming the stream and the file.
std::unordered_map<std::string, std::shared_ptr<const ReferenceProfile>> load_references(
    const EngineConfig& config);

// A stream as the producer declared it; nullptr (and counted) beyond max_streams (engine.cpp).
StreamState* create_stream(EngineState& e, const core::StreamInfo& info);

// ---- findings (engine_findings.cpp) ---------------------------------------------------------
// Opens the stream's finding of `kind`, or updates it while open.
// A material change of an open finding (new features among the top ones, a data-quality problem
// not seen before, a severity above any it had) closes it and opens a new one that supersedes
// it. `onset` is used for a new finding (the superseding one keeps the old onset when only the
// severity rose).
void raise_finding(EngineState& e, StreamState& s, FindingKind kind, Severity sev,
                   std::string reason, std::string summary, std::vector<FeatureEffect> top,
                   std::uint64_t window_records, Onset onset = {});
// The keys of `top` (first `limit`) or of `reason` not yet seen by the open finding of `kind`;
// empty when none (or the finding is not open).
std::vector<std::string> unseen_keys(const EngineState& e, const StreamState& s, FindingKind kind,
                                     const std::vector<FeatureEffect>& top, const std::string& reason);
// Window-based onset for `feature`: where its CUSUM's larger side was last 0, when that lies
// within the previous window or later; else the first record of the current window.
Onset window_onset(const StreamState& s, const std::string& feature);
// A window (or tick) without the condition: closes the finding after `clear_after` in a row.
void settle_finding(EngineState& e, StreamState& s, FindingKind kind, std::uint32_t clear_after);

// ---- references (engine_reference.cpp) ------------------------------------------------------
void init_from_profile(EngineState& e, StreamState& s, const ReferenceProfile& p,
                       ReferenceSource source);
// First batch of a stream without a file reference: decide layout and width, start pinning.
void init_pinning(EngineState& e, StreamState& s, const core::DecodedBatch& b);
void finish_pinning(EngineState& e, StreamState& s);

// Adds the open windows' counts to the closed windows' counts of the fleet bins (engine.cpp).
void refresh_fleet(StreamState& s);

// ---- rows (engine_rows.cpp) -----------------------------------------------------------------
void add_rows(EngineState& e, StreamState& s, const core::DecodedBatch& b);
void flush_staging(EngineState& e, StreamState& s);  // s's staged rows, if it owns the buffer
void flush_staging(EngineState& e);                  // the owner's staged rows

// ---- sequential detectors (engine_sequential.cpp) -------------------------------------------
// The reference distribution of (x - mean) / sd as weighted points (from its fine bins).
void reference_points(const NumericReference& r, std::vector<double>& z, std::vector<double>& w);
// Sets up a numeric feature's CUSUM charts from its compiled reference; `detectors`: the stream's
// sequential detectors in all (numeric features x (shifts + Page-Hinkley)), sharing arl_records.
void init_sequential(const SequentialSettings& sq, Feature& f, double detectors);
// CUSUM on each record of a chunk (m: n rows at stride ms, analyzed columns); raises on alarm.
void run_cusum(EngineState& e, StreamState& s, const double* m, std::size_t n, std::size_t ms);
// Page-Hinkley on the block means, at the end of each block of block_records.
void end_block(EngineState& e, StreamState& s);

// ---- windows (engine_window.cpp) ------------------------------------------------------------
void close_window(EngineState& e, StreamState& s);
// The finding kind of the stream's distribution drift (by layout).
FindingKind drift_kind(const StreamState& s) noexcept;

// ---- fast looks (engine_looks.cpp) -----------------------------------------------------------
// Sets up the fast looks of a stream whose reference is ready (every snapshot at "now").
void init_looks(StreamState& s);
// At least look_every records since the last look: evaluates the trailing segments and raises
// the drift finding when one moved; rolls the snapshots.
void look(EngineState& e, StreamState& s);

// ---- schema (engine_schema.cpp) -------------------------------------------------------------
// Returns false when the batch cannot be analyzed (feature count differs).
bool check_schema(EngineState& e, StreamState& s, const core::DecodedBatch& b);

}  // namespace mltap::detectors
