// What the ingest layer publishes: an immutable snapshot of every stream, its producers and first
// per-feature statistics, taken on the ingest thread and read by any thread (the metrics
// exporter, the HTTP API, mltapd's wiring). Plain data, so adapters can be tested with fixtures.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/batch.hpp"

namespace mltap::core {

enum class ProducerState { alive, dead, closed, unknown };

constexpr std::string_view producer_state_name(ProducerState s) noexcept {
  switch (s) {
    case ProducerState::alive: return "alive";
    case ProducerState::dead: return "dead";
    case ProducerState::closed: return "closed";
    case ProducerState::unknown: return "unknown";
  }
  return "unknown";
}

// Why rows were lost (metric `mltap_stream_dropped_records_total{reason}`).
// `interrupted`: rows a producer had counted as written (rows_written is stored before the copy)
// when it died, so never committed nor counted by another cause.
enum class DropReason : std::size_t { overwritten = 0, too_large, no_lane, bad_input, interrupted, count };

constexpr std::string_view drop_reason_name(DropReason r) noexcept {
  switch (r) {
    case DropReason::overwritten: return "overwritten";
    case DropReason::too_large: return "too_large";
    case DropReason::no_lane: return "no_lane";
    case DropReason::bad_input: return "bad_input";
    case DropReason::interrupted: return "interrupted";
    case DropReason::count: break;
  }
  return "unknown";
}

// Why a record was refused (metric `mltap_stream_invalid_records_total{reason}`).
enum class InvalidReason {
  bad_index,   // index entry out of bounds
  bad_header,  // record header disagrees with its index entry or itself
  bad_dtype,
  bad_shape,
  bad_size,       // payload size != rows * row elements * dtype size
  seq_regressed,  // lane counters went backwards
  too_large,      // larger than the reader's limit (ingest.max_record_bytes): refused unread
};
inline constexpr std::size_t kInvalidReasonCount = 7;

constexpr std::string_view invalid_reason_name(InvalidReason r) noexcept {
  switch (r) {
    case InvalidReason::bad_index: return "bad_index";
    case InvalidReason::bad_header: return "bad_header";
    case InvalidReason::bad_dtype: return "bad_dtype";
    case InvalidReason::bad_shape: return "bad_shape";
    case InvalidReason::bad_size: return "bad_size";
    case InvalidReason::seq_regressed: return "seq_regressed";
    case InvalidReason::too_large: return "too_large";
  }
  return "unknown";
}

struct FeatureSnapshot {
  std::string name;
  std::uint64_t values_total = 0;
  std::uint64_t nan_total = 0;
  std::uint64_t inf_total = 0;
  std::uint64_t window_count = 0;
  double mean = 0, variance = 0, min = 0, max = 0;
};

struct ProducerSnapshot {
  ProducerId id;
  std::string component;
  std::string sdk;
  std::uint32_t uid = 0;
  ProducerState state = ProducerState::unknown;
  std::string segment;
  std::uint32_t lanes_used = 0;
  std::uint64_t rows_written = 0;
  std::uint64_t rows_read = 0;
  std::uint64_t rows_dropped = 0;  // overwritten + too_large + no_lane + bad_input
  std::uint64_t rows_sampled_out = 0;
  double write_rate = 0;  // rows/s written, recent
  std::uint64_t created_unix_ns = 0;
  std::uint64_t last_seen_unix_ns = 0;  // last time the agent saw new data from it
};

// A stream's totals over all its producers, as the ingest thread keeps them and publishes them.
struct StreamTotals {
  std::uint64_t records_total = 0;
  std::uint64_t writes_total = 0;
  std::uint64_t sampled_out_total = 0;
  std::array<std::uint64_t, static_cast<std::size_t>(DropReason::count)> dropped{};
  std::array<std::uint64_t, kInvalidReasonCount> invalid{};
  std::uint64_t schema_mismatch_total = 0;
  std::uint64_t backlog_total = 0;  // rows of producers that ended before the agent started
  std::uint64_t restarts_total = 0;
  std::uint64_t last_record_unix_ns = 0;
};

struct StreamSnapshot : StreamTotals {
  StreamInfo info;
  double record_rate = 0;
  std::vector<ProducerSnapshot> producers;
  std::uint32_t live_producers = 0;
  std::vector<FeatureSnapshot> features;  // at most max_features_per_stream
  std::uint64_t features_cut = 0;
};

inline constexpr std::size_t kMaxUidLabels = 32;

struct IngestSnapshot {
  std::uint64_t taken_unix_ns = 0;
  std::vector<StreamSnapshot> streams;
  std::uint64_t segments_active = 0, segments_draining = 0, segments_pending = 0,
                segments_rejected = 0, segments_ignored = 0;
  std::map<std::string, std::uint64_t> rejected_total;  // by reason
  std::map<std::string, std::uint64_t> removed_total;   // by reason
  // Segments the trust check refused, by cause (docs/security.md); each refusal of a file counted
  // once, however often it is retried.
  std::map<std::string, std::uint64_t> unverified_total;
  // Verified segments refused because their stream belongs to another uid, by the segment's uid
  // (at most kMaxUidLabels distinct uids, the rest under "other").
  std::map<std::string, std::uint64_t> stream_owner_refused;
  // Segments refused because their uid was over ingest.max_segments_per_uid or
  // max_streams_per_uid, by the file owner's uid (same cap as above); once per file.
  std::map<std::string, std::uint64_t> quota_refused;
  // 1 while the namespace's presence file name is held by something mltapd cannot replace (a file
  // of another uid in a directory that does not let mltapd remove it, a directory).
  bool presence_squatted = false;
  std::uint64_t artifacts_refused = 0;  // declared artifact paths not watched (outside the allowed dirs, unreadable)
  std::uint64_t streams_cut = 0;
  std::uint64_t features_cut = 0;
  std::uint64_t sigbus_caught = 0;
  std::uint64_t polls = 0;
};

}  // namespace mltap::core
