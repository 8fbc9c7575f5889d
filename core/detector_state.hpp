// What the detector engine publishes: an immutable snapshot of every stream's reference, last
// window scores per feature, and the open and recently closed findings. Built on the ingest thread,
// read by any thread (the metrics exporter, the HTTP API, the Alertmanager push, reactions).
// Plain data, so adapters can be tested with fixture snapshots.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/finding.hpp"

namespace mltap::core {

// How a feature is compared with its reference.
enum class FeatureKind { numeric, categorical };

constexpr std::string_view feature_kind_name(FeatureKind k) noexcept {
  switch (k) {
    case FeatureKind::numeric: return "numeric";
    case FeatureKind::categorical: return "categorical";
  }
  return "numeric";
}

// Where a stream's reference came from: still being pinned from its first records, pinned, or a
// profile file.
enum class ReferenceSource { pending, pinned, file };

constexpr std::string_view reference_source_name(ReferenceSource s) noexcept {
  switch (s) {
    case ReferenceSource::pending: return "pending";
    case ReferenceSource::pinned: return "pinned";
    case ReferenceSource::file: return "file";
  }
  return "pending";
}

// One method's score of a feature. `method` names one of a fixed set and views a string
// literal (the engine's names: add_score in engine_window.cpp), so that 32 features x 10 scores
// of 1,000 streams do not each carry a std::string (issue 12, memory by stream count).
struct MethodScore {
  std::string_view method;  // "wasserstein", "psi", "ks", "js", "hellinger", "linf", "chi2", ...
  double score = NAN;
  double threshold = NAN;  // NaN: reported, not used for decisions
  double p_value = NAN;
  double error_bound = NAN;  // |binned - exact| bound where stated (ks, wasserstein)
  double noise_floor = NAN;
  double decision_level = NAN;
  bool decides = false;  // one of the configured decision methods of this feature kind
  bool powered = true;   // the samples let it decide (noise floor not far above the threshold)
};

struct FeatureResult {
  std::string name;
  FeatureKind kind = FeatureKind::numeric;
  bool enabled = true;
  bool drifted = false;               // effect over threshold and (no p-value or BH-significant)
  std::vector<MethodScore> scores;    // last window vs the reference
  std::vector<MethodScore> previous;  // last window vs the window before it
  double nan_ratio = 0, inf_ratio = 0, out_of_range_ratio = 0, unseen_ratio = NAN;
  std::vector<std::string>
      quality_flags;         // "nan_rate", "inf_rate", "out_of_range", "constant", ...
  std::uint64_t values = 0;  // values in the last window
  double mean = NAN, sd = NAN, min = NAN, max = NAN;
  double ref_mean = NAN, ref_sd = NAN;
  double sequential_ratio = 0;  // max CUSUM/PH statistic over its threshold since the last window
  double max_ratio = 0;         // largest score/decision level among decision methods
  std::string_view max_method;  // a MethodScore::method
  // The smallest effect this reference and window can decide (the decision level of the feature's
  // main method: W1/sd for numeric features, L-inf for categorical ones) and, when the reference
  // is too small for the thresholds, a sentence saying so.
  double min_detectable = NAN;
  std::string_view min_detectable_method;  // a MethodScore::method
  // What the note on the reference's power is written from (power_note() below): the sizes the
  // noise floors are for, and the floor/threshold ratio above which a method cannot decide.
  // The note is derived when asked rather than kept as text: 32 features x 1,000 streams of
  // published results carried ~8 KiB of notes per stream (issue 12, memory by stream count).
  double noise_reference = NAN, noise_window = NAN, max_floor_ratio = NAN;
};

// When the reference is too small for some decision method's threshold, a sentence saying so
// ("reference of N values vs window of M: wasserstein decides only above ..."); empty otherwise.
std::string power_note(const FeatureResult& r);

// Numbers in finding and note texts: "%.4g" (the detector engine's fmt too).
std::string format_number(double v);

// One feature's fleet bins (docs/metrics.md, "Fleet"): counts of the stream's values in a few bins
// derived from the reference profile file alone, identical on every host configured with that
// file, so Prometheus can sum them across hosts. Only for references loaded from a file.
struct FleetFeatureBins {
  std::string feature;
  std::string edges_id;                 // hash of the bins' definition and reference shares
  std::vector<double> reference_share;  // per bin, smoothed: (count + 0.5) / (n + 0.5 * bins)
  std::vector<std::uint64_t> counts;    // values counted per bin since the reference was loaded
};

struct DetectorStreamSnapshot {
  std::string name;
  std::string component;
  std::string kind;    // stream kind (features, predictions, embeddings, ...)
  std::string layout;  // how rows are analyzed (features, predictions, embeddings)
  ReferenceSource reference = ReferenceSource::pending;
  std::string reference_path;
  std::string reference_error;  // a configured file that failed to load (then pinned)
  std::uint64_t reference_rows = 0;
  std::uint64_t pin_progress = 0;  // rows pinned so far (of pin_target) while pending
  std::uint64_t pin_target = 0;
  std::uint64_t records_total = 0;
  std::uint64_t records_rejected = 0;  // schema mismatch (feature count): not analyzed
  std::uint64_t windows_closed = 0;
  std::uint64_t last_window_records = 0;
  std::uint64_t last_window_end_unix_ns = 0;
  bool drift_detected = false;
  std::uint32_t drifted_features = 0;
  std::uint32_t features_analyzed = 0;
  std::uint32_t features_cut = 0;  // over max_features_per_stream
  double embedding_mean_shift = NAN;
  double embedding_mean_cosine = NAN;
  std::uint64_t memory_bytes = 0;
  std::shared_ptr<const std::vector<FeatureResult>> features;  // never null
  std::shared_ptr<const std::vector<FleetFeatureBins>> fleet;  // null: no fleet bins
};

struct DetectorCounters {
  std::uint64_t streams_cut = 0;   // distinct streams over max_streams (first 4096 remembered)
  std::uint64_t records_cut = 0;   // records of those streams
  std::uint64_t features_cut = 0;  // features over max_features_per_stream, all streams
  std::uint64_t records_rejected = 0;
  std::uint64_t windows_closed = 0;
  std::uint64_t findings_opened = 0;
  std::uint64_t findings_superseded = 0;  // closed by a material change (and reopened as new)
};

struct DetectorSnapshot {
  std::uint64_t generated_unix_ns = 0;
  std::uint64_t sequence = 0;
  std::vector<std::shared_ptr<const DetectorStreamSnapshot>> streams;
  std::vector<Finding> open_findings;
  std::vector<Finding> closed_findings;  // most recent first, bounded
  DetectorCounters counters;
};

}  // namespace mltap::core
