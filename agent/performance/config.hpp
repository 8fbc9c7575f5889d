// The `performance:` section of mltapd's configuration (docs/performance.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/config_reader.hpp"
#include "mltap/format.hpp"

namespace mltap::performance {

// What the agent's configuration says about one predictions stream; it takes precedence over
// what the stream's producer declared (StreamOptions::labels_stream, task).
// At most this many distinct values of a slice column get their own slice (docs/performance.md,
// "Slices"); the rest go to "other".
inline constexpr std::uint32_t kMaxSliceValues = 32;

struct StreamSettings {
  std::string labels_stream;
  format::Task task = format::Task::none;
  // Slices: the predictions row's column (by feature name) whose value names the slice; empty:
  // not sliced. Values past `slice_max_values` distinct ones go to "other".
  std::string slice_column;
  std::uint32_t slice_max_values = 16;
  // A stream of (prediction, label, prediction time) rows joined elsewhere ("Pre-joined streams").
  bool prejoined = false;
  // The streams whose drift says how abnormal a drop is; empty: the features and embeddings
  // streams of the predictions stream's component ("Findings").
  std::vector<std::string> inputs;
  std::optional<double> floor;  // the metric's baseline, instead of the reference windows'
  bool operator==(const StreamSettings&) const = default;
};

// Performance findings (docs/performance.md, "Findings").
struct FindingsConfig {
  bool enabled = true;
  std::uint64_t min_labels = 200;     // labelled pairs a window (or slice) needs to be judged
  double confidence = 0.95;           // one-sided, of the metric's upper bound
  double tolerance = 0.02;            // a drop: upper bound < baseline - tolerance
  std::uint32_t reference_windows = 3;  // the first windows with enough labels: the baseline
  std::optional<double> floor;        // a fixed baseline for every stream (per stream wins)
  std::uint32_t many_features = 2;    // drifted features from which "the inputs moved"
  bool operator==(const FindingsConfig&) const = default;
};

struct PerformanceConfig {
  bool enabled = true;
  // A label joins a prediction when label time - prediction time <= label_ttl.
  std::chrono::nanoseconds label_ttl = std::chrono::hours(24 * 7);
  // How long each side waits for the other beyond what the timestamps say (agent clock): a label
  // read before its prediction waits this long for it; a prediction is held this long after its
  // TTL so that a label arriving then is counted as late rather than unmatched.
  std::chrono::nanoseconds grace = std::chrono::minutes(5);
  std::chrono::nanoseconds window = std::chrono::hours(1);  // prediction-time windows
  // Windows are forgotten this long after every label they could get has arrived
  // (window end + label_ttl + grace + retention).
  std::chrono::nanoseconds retention = std::chrono::hours(24);
  // Bounds of each predictions stream's pending table: entries, and bytes (file size).
  std::uint64_t max_pending = 1'000'000;
  std::uint64_t max_pending_bytes = 64ull << 20;
  double threshold = 0.5;          // binary: score >= threshold predicts the positive class
  std::uint32_t calibration_bins = 10;
  // Label-free estimates (binary, docs/performance.md "Estimates"): the reference is the first
  // reference_pairs joined pairs of each stream (0: no estimates); a window's estimate is
  // withheld when more than estimate_max_unsupported of its scores fall in score bins (10)
  // holding fewer than estimate_min_bin_pairs reference pairs.
  std::uint64_t reference_pairs = 2000;
  std::uint32_t estimate_min_bin_pairs = 10;
  double estimate_max_unsupported = 0.05;
  std::uint32_t max_streams = 64;  // predictions streams joined at once
  std::map<std::string, StreamSettings> streams;  // by predictions stream name
  FindingsConfig findings;
  bool operator==(const PerformanceConfig&) const = default;
};

// Parses the section (absent: defaults). Throws core::ConfigError at file:line:column.
PerformanceConfig parse_performance_config(core::ConfigSection section);

std::optional<format::Task> parse_task(std::string_view text) noexcept;

}  // namespace mltap::performance
