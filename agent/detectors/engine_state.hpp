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
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/detectors/binning.hpp"
#include "agent/detectors/config.hpp"
#include "agent/detectors/fleet_bins.hpp"
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
inline constexpr std::size_t kKinds = 8;   // finding kinds (core::FindingKind)

// Numbers in finding texts: "%.4g".
inline std::string fmt(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// One analyzed feature of a stream: its reference, current and previous window, sequential
// detectors.
struct Feature {
  std::string name;
  FeatureKind kind = FeatureKind::numeric;
  bool enabled = true;
  std::uint32_t column = 0;
  std::unique_ptr<PinnedFeatureBuilder> pin;
  NumericReference num;
  CategoricalReference cat;
  NumericWindow ncur, nprev;
  CategoricalWindow ccur, cprev;
  bool has_prev = false;
  double ref_values = 0, ref_finite = 0;
  // CUSUM charts, one per sequential.shifts, on u = (clamp(x, seq_lo, seq_hi) - seq_center) *
  // seq_inv (engine_sequential.cpp: init_sequential says how these are set).
  std::vector<Cusum> cusum;
  double seq_lo = 0, seq_hi = 0, seq_center = 0, seq_inv = 0, seq_inv_ref = 0;
  PageHinkley ph;
  double seq_ratio = 0;
  FleetMap fleet;  // fleet bins (file references only; fleet_bins.hpp)

  std::size_t memory_bytes() const noexcept {
    std::size_t b = sizeof(*this) + name.capacity() + fleet.memory_bytes();
    if (pin) b += pin->memory_bytes();
    b += num.memory_bytes() + cat.memory_bytes() + ncur.memory_bytes() + nprev.memory_bytes() +
         ccur.memory_bytes() + cprev.memory_bytes() + cusum.capacity() * sizeof(Cusum);
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
  std::string pinned_json;  // the pinned reference as a profile document, kept for checkpoints
  bool pinned_saved = false;  // pinned_json handed to a checkpoint (written once, not per change)
  // checkpoints: state_changes counts changes of what is kept (reference, open findings)
  std::uint64_t state_changes = 1, state_saved = 0;
  // Newest producer timestamp analyzed, and as last checkpointed. A restarted agent reads the
  // rings from their oldest record again: batches up to replay_until_ns (the checkpointed value)
  // were analyzed before the restart and are skipped until replay_deadline_ns (agent clock), so
  // that pre-incident records replayed from the ring do not close a restored finding.
  std::uint64_t last_record_ns = 0, saved_record_ns = 0;
  std::uint64_t replay_until_ns = 0, replay_deadline_ns = 0;
  // schema
  format::DType expected_dtype = format::DType::invalid;
  std::vector<std::uint32_t> expected_shape;
  std::uint64_t window_mismatch = 0;
  std::string mismatch_reason, mismatch_detail;
  // staging (raw rows) and derived rows
  std::vector<double> staging, derived;
  std::size_t staged = 0;
  std::size_t chunk = kChunk;  // rows per column-wise block; fewer for very wide rows
  // windows
  std::uint64_t window_rows = 0, window_start_ns = 0, windows_closed = 0, block_rows = 0;
  // Index of the next record through the intake (pinning included): CUSUM's alarm and onset records.
  std::uint64_t record_index = 0;
  std::uint64_t last_window_records = 0, last_window_end_ns = 0;
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

  std::size_t memory_bytes() const noexcept {
    std::size_t b =
        sizeof(*this) + (staging.capacity() + derived.capacity() + ref_mean.capacity() +
                         win_sum.capacity() + pin_sum.capacity() + pin_sumsq.capacity()) *
                            sizeof(double);
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
};

// A stream as the producer declared it; nullptr (and counted) beyond max_streams (engine.cpp).
StreamState* create_stream(EngineState& e, const core::StreamInfo& info);

// ---- findings (engine_findings.cpp) ---------------------------------------------------------
// Opens the stream's finding of `kind`, or updates it while open.
void raise_finding(EngineState& e, StreamState& s, FindingKind kind, Severity sev,
                   std::string reason, std::string summary, std::vector<FeatureEffect> top,
                   std::uint64_t window_records);
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
void flush_staging(EngineState& e, StreamState& s);

// ---- sequential detectors (engine_sequential.cpp) -------------------------------------------
// Sets up a numeric feature's CUSUM charts from its compiled reference; `detectors`: the stream's
// sequential detectors in all (numeric features x (shifts + Page-Hinkley)), sharing arl_records.
void init_sequential(const SequentialSettings& sq, Feature& f, double detectors);
// CUSUM on each record of a chunk (m: n rows at stride ms, analyzed columns); raises on alarm.
void run_cusum(EngineState& e, StreamState& s, const double* m, std::size_t n, std::size_t ms);
// Page-Hinkley on the block means, at the end of each block of block_records.
void end_block(EngineState& e, StreamState& s);

// ---- windows (engine_window.cpp) ------------------------------------------------------------
void close_window(EngineState& e, StreamState& s);

// ---- schema (engine_schema.cpp) -------------------------------------------------------------
// Returns false when the batch cannot be analyzed (feature count differs).
bool check_schema(EngineState& e, StreamState& s, const core::DecodedBatch& b);

}  // namespace mltap::detectors
