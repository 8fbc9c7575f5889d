// What the ingest layer hands to everything behind it (statistics, detectors, snapshots): one
// validated record of a stream, decoded to doubles, and who wrote it. Data flows one way:
// reader -> sinks. The producer identity types are here too: the correlator, the tracer and the
// reactions name producers the same way.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "mltap/format.hpp"

namespace mltap::core {

// A process that writes a stream; (pid, start_ticks) is unique where pid alone is reused.
struct ProducerId {
  std::uint32_t pid = 0;
  std::uint64_t start_ticks = 0;  // /proc/<pid>/stat field 22
  bool operator==(const ProducerId&) const = default;
  auto operator<=>(const ProducerId&) const = default;
};

// A stream as declared by its (first) producer. Several processes may write one stream name;
// they must agree on the schema or their records are counted as schema mismatches.
struct StreamInfo {
  std::string name;
  std::string component;
  format::StreamKind kind = format::StreamKind::features;
  format::DType declared_dtype = format::DType::invalid;  // invalid = any
  std::vector<std::uint32_t> row_shape;                    // empty = any
  std::vector<std::string> feature_names;                  // may be empty
  // ABI 2.1, predictions streams: the task and the stream carrying their labels (may be empty).
  format::Task task = format::Task::none;
  std::string labels_stream;
};

// A producer's segment as it declared itself in its header (validated by the reader).
struct SegmentIdentity {
  std::string stream;
  std::string component;
  std::string sdk;
  format::StreamKind kind = format::StreamKind::features;
  format::DType declared_dtype = format::DType::invalid;
  std::vector<std::uint32_t> declared_shape;
  std::vector<std::string> feature_names;
  std::vector<std::string> artifacts;  // validated absolute paths the producer declared
  format::Task task = format::Task::none;  // ABI 2.1 (kind predictions)
  std::string labels_stream;               // ABI 2.1: validated stream name, or empty
  ProducerId producer;
  std::uint32_t uid = 0;
  std::uint64_t pid_ns_inode = 0;
  std::uint64_t created_unix_ns = 0;
  std::uint32_t lane_count = 0;
  std::uint64_t data_bytes = 0;
  std::uint32_t sampling_budget = 0;
};

// One record: `rows` rows of `cols` values each (cols = product of the row shape), row-major.
// NaN/Inf are preserved. Integer and bool dtypes are converted exactly up to 2^53.
struct DecodedBatch {
  const StreamInfo* stream = nullptr;
  ProducerId producer;
  std::uint64_t seq = 0;           // record sequence within its lane
  std::uint64_t timestamp_ns = 0;  // unix ns from the producer
  format::DType dtype = format::DType::invalid;  // as written
  std::span<const std::uint32_t> row_shape;      // as written (may differ from declared)
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::span<const double> values;                // rows * cols
  std::span<const std::uint64_t> trace_ids;      // empty or rows
  // Left in the rings by a producer that ended before this agent started (a previous run's
  // leftovers): counted by ingest as backlog, never analyzed by the detectors, so that stale
  // data never becomes a stream's reference (docs/deploy.md, "Backlog").
  bool backlog = false;
};

// Behind the reader: statistics, detectors. Called on the single ingest thread only.
class BatchSink {
 public:
  virtual ~BatchSink() = default;
  virtual void on_batch(const DecodedBatch& batch) = 0;
  // Called at least every poll interval, with the agent's wall clock, so that time-based windows
  // close and silence (staleness) is noticed even when no record arrives.
  virtual void on_tick(std::uint64_t now_unix_ns) = 0;
};

}  // namespace mltap::core
