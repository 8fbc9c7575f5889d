// A finding: what a detector concluded about a stream. One stream raises one finding per kind at a
// time; it stays open while the condition holds and is closed (not deleted) when it clears, or
// when a material change (new features among the top ones, a quality problem not seen before, a
// severity rise) supersedes it with a new finding (a new id), so that alerting sees it as new.
// Consumed by the exporters (metrics, Alertmanager push), the correlator (related events) and the
// reactions.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mltap::core {

enum class FindingKind {
  drift,              // distribution shift against the reference
  data_quality,       // NaN/Inf, out-of-range, constant feature, cardinality change
  schema_change,      // dtype, shape or feature count differs from the declared/reference one
  staleness,          // no records for several times the usual interval
  throughput,         // rate dropped or spiked
  sequential_change,  // CUSUM / Page-Hinkley on means or scores
  prediction_drift,   // score distribution or class-share shift
  embedding_drift,    // norms, mean cosine distance, random projections
  performance,        // model performance dropped (agent/performance: realized or estimated)
};

constexpr std::string_view finding_kind_name(FindingKind k) noexcept {
  switch (k) {
    case FindingKind::drift: return "drift";
    case FindingKind::data_quality: return "data_quality";
    case FindingKind::schema_change: return "schema_change";
    case FindingKind::staleness: return "staleness";
    case FindingKind::throughput: return "throughput";
    case FindingKind::sequential_change: return "sequential_change";
    case FindingKind::prediction_drift: return "prediction_drift";
    case FindingKind::embedding_drift: return "embedding_drift";
    case FindingKind::performance: return "performance";
  }
  return "unknown";
}

enum class Severity { info, warning, critical };

constexpr std::string_view severity_name(Severity s) noexcept {
  switch (s) {
    case Severity::info: return "info";
    case Severity::warning: return "warning";
    case Severity::critical: return "critical";
  }
  return "info";
}

// One feature's contribution, ranked by how far past its threshold it is.
struct FeatureEffect {
  std::string feature;
  std::string method;       // "psi", "wasserstein", "nan_rate", "cusum", ...
  double score = 0;         // effect size / statistic
  double threshold = 0;     // the score at which this method calls it a change
  double p_value = NAN;     // only where n makes it meaningful
  std::string detail;       // short human text: "mean 3.1 -> 4.0"
  double min_detectable = NAN;  // drift: smallest effect the reference and window can decide
  // Sequential detectors (CUSUM) only, else 0: indices of records in the stream (0 = its first
  // record, reference pinning included) at which the detector alarmed, and where it estimates the
  // change started (the record after the alarming statistic's last reset at zero).
  std::uint64_t alarm_record = 0;
  std::uint64_t onset_record = 0;
};

struct Finding {
  std::uint64_t id = 0;          // unique within this agent run, increasing
  std::string stream;
  std::string component;
  FindingKind kind = FindingKind::drift;
  std::string reason;            // finer cause, e.g. "nan_rate", "psi", "silent"
  Severity severity = Severity::warning;
  std::uint64_t opened_unix_ns = 0;
  std::uint64_t updated_unix_ns = 0;
  std::uint64_t closed_unix_ns = 0;  // 0 while open
  std::string summary;               // one line a human reads in an alert
  std::vector<FeatureEffect> top;    // most moved features first (bounded, e.g. 5)
  std::uint64_t window_records = 0;  // rows the decision was based on
  // When the change began, as estimated (docs/detectors.md "Onset"): the last reset of the
  // alarming CUSUM, the first window that crossed, the first mismatching batch... Never after
  // opened_unix_ns; 0 when unknown (findings restored from an old state document).
  std::uint64_t onset_unix_ns = 0;
  std::string onset_basis;           // how: "cusum", "window", "batch", "last_record", ...
  // How far after onset_unix_ns the change may still have begun (a block or a window of
  // records): events up to onset + resolution are possible causes too.
  std::uint64_t onset_resolution_ns = 0;
  std::uint64_t supersedes = 0;      // id of the finding this one replaced (material change), or 0
  bool open() const noexcept { return closed_unix_ns == 0; }
  // The onset, or the opening when none was estimated.
  std::uint64_t onset_or_opened() const noexcept {
    return onset_unix_ns != 0 && onset_unix_ns <= opened_unix_ns ? onset_unix_ns : opened_unix_ns;
  }
};

}  // namespace mltap::core
