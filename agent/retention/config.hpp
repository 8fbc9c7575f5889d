// The `retention:` section of mltapd's configuration (docs/lineage.md).
#pragma once

#include <chrono>
#include <cstdint>

#include "core/config_reader.hpp"

namespace mltap::retention {

struct RetentionConfig {
  bool enabled = true;
  // Rows with a trace id are kept iff format::trace_id_hash(id) <= keep_share * 2^64: the
  // producers' sampling hash, so every stream keeps the same ids and joins survive.
  double keep_share = 1.0;
  // Rows without a trace id: a reservoir of this many per stream and bucket.
  std::uint32_t reservoir = 1000;
  std::chrono::nanoseconds bucket = std::chrono::minutes(1);  // one file per stream and bucket
  std::chrono::nanoseconds max_age = std::chrono::hours(24 * 7);
  std::uint64_t max_stream_bytes = 16ull << 20;
  std::uint64_t max_bytes = 64ull << 20;
  std::uint32_t max_streams = 64;
  std::uint32_t max_row_values = 256;  // wider rows (embeddings) are not retained
  std::uint64_t max_flags = 100'000;   // flagged trace ids kept (mltap flag)
  bool operator==(const RetentionConfig&) const = default;
};

// Parses the section (absent: defaults). Throws core::ConfigError at file:line:column.
RetentionConfig parse_retention_config(core::ConfigSection section);

}  // namespace mltap::retention
