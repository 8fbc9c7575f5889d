// Retained samples: a bounded store of recent rows per stream, on disk in the agent's state
// directory (in memory without one), indexed by time bucket and trace id (docs/lineage.md).
// What `mltap trace`, `mltap review` and `mltap flag` read. A core::BatchSink: rows arrive on the
// ingest thread; queries come from the HTTP handlers under a shared lock (RetentionStore::read).
//
// Which rows: a row with a trace id is kept iff format::trace_id_hash(id) <= keep_share * 2^64,
// the producers' sampling hash, so every stream keeps the same ids; rows without one go to a
// reservoir of `reservoir` rows per stream and bucket. Bounds: a byte cap per stream and one for
// the whole store; the oldest bucket goes first (of the stream, or of any stream), every row
// that leaves is counted by cause (core::RetentionDrop).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "agent/retention/config.hpp"
#include "core/batch.hpp"
#include "core/retention_state.hpp"
#include "mltap/format.hpp"

namespace mltap::retention {

// What the store knows of a stream (from its first retained batch; kept in each bucket file).
struct StreamMeta {
  std::string name;
  std::string component;
  format::StreamKind kind = format::StreamKind::features;
  format::Task task = format::Task::none;
  std::string labels_stream;
  std::vector<std::string> feature_names;
};

// One retained row as a query sees it; `values` stays valid while the view is held.
struct RetainedRow {
  std::uint64_t trace_id = 0;
  bool has_trace_id = false;
  std::uint64_t timestamp_ns = 0;
  std::span<const double> values;
};

struct FlagResult {
  std::uint64_t added = 0;
  std::uint64_t already = 0;
  std::uint64_t refused = 0;  // over max_flags
};

class RetentionStore final : public core::BatchSink {
 public:
  struct Impl;

  // Reopens what `state_dir`/retention holds (torn tails cut, caps applied); memory only when
  // `state_dir` is empty or unusable (logged). `now_unix_ns` 0: the wall clock.
  RetentionStore(RetentionConfig config, const std::string& state_dir,
                 std::uint64_t now_unix_ns = 0);
  ~RetentionStore() override;
  RetentionStore(const RetentionStore&) = delete;
  RetentionStore& operator=(const RetentionStore&) = delete;

  void on_batch(const core::DecodedBatch& batch) override;
  void on_tick(std::uint64_t now_unix_ns) override;

  core::RetentionStats stats() const;
  const RetentionConfig& config() const noexcept;

  // Marks predictions of `stream` as wrong for `mltap review` (kept in the state directory).
  FlagResult flag(const std::string& stream, std::span<const std::uint64_t> trace_ids,
                  std::uint64_t now_unix_ns);

  // A consistent view for queries; holds the store's shared lock (ingest waits while it lives:
  // keep it short).
  class View {
   public:
    std::vector<const StreamMeta*> streams() const;
    const StreamMeta* meta(const std::string& stream) const;
    // The stream's retained row with this trace id (the first one retained).
    std::optional<RetainedRow> find(const std::string& stream, std::uint64_t trace_id) const;
    // Rows with since <= timestamp < until, oldest bucket first.
    void for_each(const std::string& stream, std::uint64_t since_unix_ns,
                  std::uint64_t until_unix_ns,
                  const std::function<void(const RetainedRow&)>& fn) const;
    bool flagged(const std::string& stream, std::uint64_t trace_id) const;
    std::vector<std::uint64_t> flags_of(const std::string& stream) const;

   private:
    friend class RetentionStore;
    View(const Impl& impl, std::shared_mutex& mutex) : impl_(&impl), lock_(mutex) {}
    const Impl* impl_;
    std::shared_lock<std::shared_mutex> lock_;
  };
  View read() const;

 private:
  std::unique_ptr<Impl> impl_;
  mutable std::shared_mutex mutex_;
};

// Whether a trace id is within `keep_share` of the sampling hash (what the producers decide too).
bool keeps_trace_id(std::uint64_t trace_id, double keep_share) noexcept;

}  // namespace mltap::retention
