// The `performance:` section of mltapd's configuration (docs/performance.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "core/config_reader.hpp"
#include "mltap/format.hpp"

namespace mltap::performance {

// What the agent's configuration says about one predictions stream; it takes precedence over
// what the stream's producer declared (StreamOptions::labels_stream, task).
struct StreamSettings {
  std::string labels_stream;
  format::Task task = format::Task::none;
  bool operator==(const StreamSettings&) const = default;
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
  bool operator==(const PerformanceConfig&) const = default;
};

// Parses the section (absent: defaults). Throws core::ConfigError at file:line:column.
PerformanceConfig parse_performance_config(core::ConfigSection section);

std::optional<format::Task> parse_task(std::string_view text) noexcept;

}  // namespace mltap::performance
