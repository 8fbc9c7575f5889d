// What the retained-samples store publishes (agent/retention; docs/lineage.md): per stream its
// bytes and records on disk, and why records were not kept. Plain data, read by the metrics
// exporter through a provider callback.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mltap::core {

// Why a row offered to the store is not (or no longer) retained.
enum class RetentionDrop {
  stream_cap,   // evicted (oldest bucket first) or refused: the stream's byte cap
  total_cap,    // evicted (oldest bucket of any stream first): the store's byte cap
  max_age,      // older than max_age (at arrival, or aged out)
  max_streams,  // a stream over max_streams
  too_wide,     // a row with more values than max_row_values
  reservoir,    // a row without trace id the bucket's reservoir did not keep (or replaced)
  write_error,  // not written to its file when it arrived (held in memory, written when the
                // file system takes it again; lost only if mltapd stops before that)
  count_
};

constexpr std::string_view retention_drop_name(RetentionDrop d) noexcept {
  switch (d) {
    case RetentionDrop::stream_cap: return "stream_cap";
    case RetentionDrop::total_cap: return "total_cap";
    case RetentionDrop::max_age: return "max_age";
    case RetentionDrop::max_streams: return "max_streams";
    case RetentionDrop::too_wide: return "too_wide";
    case RetentionDrop::reservoir: return "reservoir";
    case RetentionDrop::write_error: return "write_error";
    case RetentionDrop::count_: break;
  }
  return "unknown";
}

// Why a write to the store's files failed (each failed write or open counted once; the rows
// it leaves unwritten are counted as RetentionDrop::write_error).
enum class RetentionWriteError { no_space, read_only, other, count_ };

constexpr std::string_view retention_write_error_name(RetentionWriteError e) noexcept {
  switch (e) {
    case RetentionWriteError::no_space: return "no_space";
    case RetentionWriteError::read_only: return "read_only";
    case RetentionWriteError::other: return "other";
    case RetentionWriteError::count_: break;
  }
  return "unknown";
}

struct RetentionStreamStats {
  std::string stream;
  std::uint64_t bytes = 0;    // on disk (in memory without a state directory)
  std::uint64_t records = 0;  // rows retained now
  std::uint64_t buckets = 0;
  std::uint64_t oldest_unix_ns = 0;  // start of the oldest bucket held; 0: none
};

struct RetentionStats {
  bool persistent = false;  // files in the state directory (else memory only)
  std::uint64_t bytes = 0;
  std::uint64_t records = 0;
  std::uint64_t sampled_out = 0;  // rows with a trace id above the keep share (by design)
  std::uint64_t torn_bytes = 0;   // bytes of torn or corrupt tails cut when files were reopened
  // Heap the retained rows hold in mltapd (rows and values, as allocated): bounded by the byte
  // caps, since every row in memory is also in `bytes`.
  std::uint64_t memory_bytes = 0;
  std::array<std::uint64_t, static_cast<std::size_t>(RetentionDrop::count_)> dropped{};
  std::uint64_t flagged = 0;  // trace ids flagged by users (mltap flag)
  bool write_failing = false;  // the last write failed and memory holds what the files lack
  std::uint64_t unwritten_bytes = 0;  // frames held in memory that their files lack yet
  std::array<std::uint64_t, static_cast<std::size_t>(RetentionWriteError::count_)>
      write_failures{};
  std::vector<RetentionStreamStats> streams;
};

}  // namespace mltap::core
