// What the performance component (agent/performance) publishes: per predictions stream, the
// label join's counters and the realized metrics of each prediction-time window. Built on the
// ingest thread, read by any thread (the metrics exporter, the HTTP API). Plain data, so adapters
// can be tested with fixture snapshots.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/finding.hpp"
#include "mltap/format.hpp"

namespace mltap::core {

// Upper bounds (seconds) of the label-lag histogram buckets; a last bucket holds the rest.
inline constexpr std::array<double, 9> kLabelLagBucketsSeconds = {1,    10,    60,     600,    3600,
                                                                  21600, 86400, 604800, 2592000};
inline constexpr std::size_t kLabelLagBuckets = kLabelLagBucketsSeconds.size() + 1;

// Why an entry left the pending table before its time (docs/performance.md, "Eviction order").
enum class EvictionCause : std::uint8_t {
  joined_marker = 0,  // a joined prediction kept for duplicate detection
  waiting_label = 1,  // a label waiting for its prediction
  prediction = 2,     // a prediction still waiting for its label
};
inline constexpr std::size_t kEvictionCauses = 3;

constexpr std::string_view eviction_cause_name(EvictionCause c) noexcept {
  switch (c) {
    case EvictionCause::joined_marker: return "joined_marker";
    case EvictionCause::waiting_label: return "waiting_label";
    case EvictionCause::prediction: return "prediction";
  }
  return "prediction";
}

// The realized metrics of one window; a metric that is undefined on the window's labels (no
// positive label for recall, one class only for AUC, no label at all) is nullopt.
struct RealizedMetrics {
  std::optional<double> accuracy;
  std::optional<double> precision;
  std::optional<double> recall;
  std::optional<double> f1;
  std::optional<double> roc_auc;
  std::optional<double> log_loss;
  std::optional<double> calibration_error;  // binned (expected calibration error)
  std::optional<double> mae;
  std::optional<double> rmse;
};

// The metrics by name (the `metric` label and JSON keys), in export order.
inline std::array<std::pair<std::string_view, std::optional<double>>, 9> named_metrics(const RealizedMetrics& m) {
  return {{{"accuracy", m.accuracy}, {"precision", m.precision}, {"recall", m.recall}, {"f1", m.f1},
           {"roc_auc", m.roc_auc}, {"log_loss", m.log_loss}, {"calibration_error", m.calibration_error},
           {"mae", m.mae}, {"rmse", m.rmse}}};
}

// One slice of a window (docs/performance.md, "Slices"): the predictions whose slice column held
// `value` (or, past the configured number of values, "other").
struct PerformanceSlice {
  std::string value;
  std::uint64_t predictions = 0;
  std::uint64_t labelled = 0;
  RealizedMetrics metrics;
  double coverage() const noexcept {
    return predictions == 0 ? 0.0 : static_cast<double>(labelled) / static_cast<double>(predictions);
  }
};

// Label-free estimate of a binary window's performance (CBPE, docs/performance.md "Estimates").
// A value with its sampling-error band [lower, upper] (the estimate +- 3 sigma, clipped to [0, 1]).
struct EstimatedValue {
  double value = 0;
  double lower = 0;
  double upper = 0;
};

// Why a window has no estimate (a bounded set: a Prometheus label).
enum class EstimateWithheld : std::uint8_t {
  none = 0,
  no_reference = 1,     // none of the window's predictions arrived after the reference was fitted
  outside_support = 2,  // too many of the window's scores fall where the reference has few pairs
};
inline constexpr std::size_t kEstimateWithheldReasons = 3;

constexpr std::string_view estimate_withheld_name(EstimateWithheld r) noexcept {
  switch (r) {
    case EstimateWithheld::none: return "none";
    case EstimateWithheld::no_reference: return "no_reference";
    case EstimateWithheld::outside_support: return "outside_support";
  }
  return "none";
}

struct PerformanceEstimate {
  std::uint64_t predictions = 0;  // of the window's predictions, those scored by the reference's map
  std::uint64_t unsupported = 0;  // of those, scores in ranges with too few reference pairs
  EstimateWithheld withheld = EstimateWithheld::none;
  std::string withheld_detail;    // a sentence for people (empty when not withheld)
  // Undefined as the realized ones are (precision with no expected predicted positive...).
  std::optional<EstimatedValue> accuracy;
  std::optional<EstimatedValue> precision;
  std::optional<EstimatedValue> recall;
  std::optional<EstimatedValue> f1;
};

// The labelled reference the estimates are calibrated on.
struct EstimateReference {
  std::string source;               // "first_joined_pairs"
  std::uint64_t pairs = 0;          // collected so far (== target once fitted)
  std::uint64_t target = 0;         // performance.reference_pairs
  bool fitted = false;
  std::int64_t fitted_unix_ns = 0;  // agent time of the fit
  bool calibrated = false;          // isotonic map used (else raw scores)
  double ece_raw = 0;               // reference ECE of the raw scores
  double ece_calibrated = 0;        // held-out (5-fold) ECE of the isotonic map
};

struct PerformanceWindow {
  std::int64_t start_unix_ns = 0;  // prediction-time window [start, start + window)
  std::uint64_t predictions = 0;   // with a trace id, first arrival of each id
  std::uint64_t labelled = 0;      // joined to a label within the TTL
  std::uint64_t evicted = 0;       // predictions evicted before a label could join
  std::array<std::uint64_t, kLabelLagBuckets> lag_buckets{};  // joined labels by lag
  RealizedMetrics metrics;
  std::vector<PerformanceSlice> slices;  // sliced streams only: by slice value, "other" last
  std::optional<PerformanceEstimate> estimate;  // binary streams with estimates enabled
  double coverage() const noexcept {
    return predictions == 0 ? 0.0 : static_cast<double>(labelled) / static_cast<double>(predictions);
  }
};

// Rows of a pre-joined stream (prediction, label, prediction time), by outcome; monotonic, kept
// in the table's header (docs/performance.md, "Pre-joined streams").
struct PrejoinedCounters {
  std::uint64_t rows = 0;            // rows seen
  std::uint64_t accepted = 0;        // attributed to their prediction-time window
  std::uint64_t bad_shape = 0;       // not 3 columns (4 with a slice column)
  std::uint64_t bad_prediction = 0;  // NaN/Inf, or what the task cannot score
  std::uint64_t bad_label = 0;       // NaN/Inf
  std::uint64_t bad_time = 0;        // NaN/Inf/negative prediction time
  std::uint64_t future = 0;          // prediction time after the agent's clock + grace
  std::uint64_t too_old = 0;         // its window is already past retention
};

// Monotonic since the table was created (kept with it in the state directory).
struct JoinCounters {
  std::uint64_t predictions = 0;          // inserted (first arrival of each trace id)
  std::uint64_t predictions_duplicate = 0;  // a trace id already pending or joined
  std::uint64_t predictions_no_trace_id = 0;
  std::uint64_t predictions_bad = 0;      // shape the task cannot score, NaN
  std::uint64_t labels = 0;               // label rows seen (with a trace id)
  std::uint64_t labels_no_trace_id = 0;
  std::uint64_t labels_bad = 0;           // NaN or Inf label
  std::uint64_t joined = 0;
  std::uint64_t unmatched = 0;            // no prediction within the grace period
  std::uint64_t duplicate = 0;            // a label for an id already labelled (or waiting)
  std::uint64_t late = 0;                 // label time - prediction time > TTL
  std::uint64_t expired_unlabelled = 0;   // predictions whose TTL (+ grace) ended without label
  std::array<std::uint64_t, kEvictionCauses> evicted{};  // by EvictionCause
};

struct PerformanceStreamState {
  std::string stream;         // the predictions stream
  std::string labels_stream;
  format::Task task = format::Task::none;
  std::int64_t window_ns = 0;
  std::int64_t label_ttl_ns = 0;
  JoinCounters counters;
  std::uint64_t pending = 0;          // predictions waiting for a label
  std::uint64_t waiting_labels = 0;   // labels waiting for their prediction
  std::uint64_t joined_markers = 0;
  std::uint64_t capacity = 0;         // entries the table holds at most
  std::uint64_t table_bytes = 0;      // the table's size (file or memory)
  bool durable = false;               // kept in the state directory
  std::array<std::uint64_t, kLabelLagBuckets> lag_buckets{};  // every joined label
  double lag_seconds_sum = 0;
  std::vector<PerformanceWindow> windows;  // oldest first
  // Slices (docs/performance.md, "Slices"): the declared column, the cap on distinct values, and
  // rows that went to "other" past the cap, whose slice value was NaN/Inf (also "other"), or whose
  // record lacked the column (not sliced).
  std::string slice_column;
  std::uint32_t slice_max_values = 0;
  std::uint64_t slice_other_rows = 0;
  std::uint64_t slice_invalid_rows = 0;
  std::uint64_t slice_missing_rows = 0;
  bool prejoined = false;  // a stream of (prediction, label, prediction time) rows
  PrejoinedCounters prejoined_counters;
  std::optional<EstimateReference> reference;  // binary streams with estimates enabled
};

struct PerformanceSnapshot {
  std::uint64_t taken_unix_ns = 0;
  std::vector<PerformanceStreamState> streams;
  std::uint64_t labels_without_predictions_stream = 0;  // label rows no predictions stream names
  // Performance findings (kind performance, agent/performance/findings.hpp): merged with the
  // detectors' by the composition root for export.
  std::vector<Finding> open_findings;
  std::vector<Finding> closed_findings;  // most recent first, bounded
};

}  // namespace mltap::core
