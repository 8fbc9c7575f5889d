// The label join of one predictions stream: predictions and labels meet by trace id in the
// pending table; each joined pair is attributed to the window of its prediction's time and
// appended to that window's joined log (state directory), from which the window's realized
// metrics are computed. The rules (docs/performance.md, "The join"):
//
//   label for id, at agent time now:
//     pending prediction P (now <= P.ts + ttl + grace): joins when label.ts - P.ts <= ttl,
//       else counts as late (P stays pending);
//     joined prediction, or a label already waiting: duplicate (the first label wins);
//     nothing: waits (until label.ts + grace) for its prediction, then counts as unmatched.
//   prediction for id:
//     nothing: pending; a waiting label W: joins (or late) as above;
//     pending or joined: duplicate prediction (the first wins).
//   Predictions leave at P.ts + ttl + grace (expired_unlabelled if never joined).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/performance/config.hpp"
#include "agent/performance/estimate.hpp"
#include "agent/performance/pending_table.hpp"
#include "agent/performance/realized.hpp"
#include "agent/performance/slice_table.hpp"
#include "core/batch.hpp"
#include "core/performance_state.hpp"

namespace mltap::performance {

class StreamJoin {
 public:
  // `dir` empty: the table in memory, no joined log (nothing survives a restart).
  StreamJoin(const PendingTable::Identity& id, const PerformanceConfig& config, const std::string& dir);
  ~StreamJoin();
  StreamJoin(const StreamJoin&) = delete;
  StreamJoin& operator=(const StreamJoin&) = delete;

  const std::string& stream() const noexcept { return id_.stream; }
  const std::string& labels_stream() const noexcept { return id_.labels_stream; }
  format::Task task() const noexcept { return id_.task; }

  void add_predictions(const core::DecodedBatch& batch, std::int64_t now_ns);
  void add_labels(const core::DecodedBatch& batch, std::int64_t now_ns);
  // A pre-joined stream's rows: (prediction, label, prediction time in unix seconds[, slice]);
  // each row counts in the window of its prediction time (docs/performance.md).
  void add_prejoined(const core::DecodedBatch& batch, std::int64_t now_ns);
  // One row each (tests, benchmarks); the joined log is written at flush() (the batch calls do).
  // `slice`: the prediction's slice index (slice_code()), 0 = not sliced.
  void prediction(std::uint64_t trace_id, std::int64_t ts_ns, double value, std::int64_t now_ns,
                  std::uint32_t slice = kSliceNone);
  // One pre-joined row; false (and counted by reason) when refused.
  bool prejoined(double prediction, double label, double prediction_time_s, std::int64_t label_ts_ns,
                 std::int64_t now_ns, std::optional<double> slice_value = std::nullopt);
  // The slice index of a slice column value (kSliceNone when the stream is not sliced).
  std::uint32_t slice_code(double value) noexcept { return slices_ ? slices_->code_for(value) : kSliceNone; }
  bool sliced() const noexcept { return slices_ != nullptr; }
  bool is_prejoined() const noexcept { return prejoined_; }
  void label(std::uint64_t trace_id, std::int64_t ts_ns, double value, std::int64_t now_ns);
  void flush();
  // Expires what is due (the part of the table due since the last call: all of it every 64 s of
  // agent time; all of it now with full = true) and
  // forgets windows past their retention.
  void tick(std::int64_t now_ns, bool full = false);
  // The published state; computes the metrics of windows that changed.
  core::PerformanceStreamState state();
  // File name stem of a stream's table and logs in the state directory.
  static std::string file_stem(const std::string& stream);

 private:
  struct SliceAcc {
    std::vector<JoinedPair> pairs;
    bool dirty = true;
    core::RealizedMetrics metrics;
  };
  struct Window {
    std::vector<JoinedPair> pairs;
    std::map<std::uint32_t, SliceAcc> slices;  // by slice index (sliced streams only)
    std::array<std::uint64_t, core::kLabelLagBuckets> lag_buckets{};
    bool dirty = true;
    core::RealizedMetrics metrics;
  };
  // A joined pair in its window's log (`.pairs`); logs of earlier versions (`.joined`) hold the
  // first five fields only and are read as unsliced.
  struct LogRecord {
    std::uint64_t trace_id;
    std::int64_t prediction_ns;
    std::int64_t lag_ns;
    double prediction;
    double label;
    std::uint32_t slice;             // slice index, 0 = not sliced
    std::uint32_t slice_generation;  // the slice table's generation it refers to
  };
  static_assert(sizeof(LogRecord) == 48);
  static constexpr std::size_t kLegacyRecordBytes = 40;

  std::int64_t window_of(std::int64_t ts) const noexcept;
  bool prediction_expired(const Slot& s, std::int64_t now) const noexcept;
  bool label_expired(const Slot& s, std::int64_t now) const noexcept;
  void join(Slot* s, std::uint64_t trace_id, std::int64_t pred_ts, double pred,
            std::int64_t label_ts, double label, std::uint32_t slice);
  void replay_log(const std::string& path, std::size_t record_bytes);
  void record_joined(const LogRecord& r, bool to_log);
  // Removes an entry found past its time, counting why.
  void retire(Slot* s);
  bool make_room(std::int64_t now);
  std::string log_path(std::int64_t window_start) const;
  void replay_logs();
  void prune_windows(std::int64_t now);

  PendingTable::Identity id_;
  PerformanceConfig config_;
  std::string dir_;
  std::int64_t ttl_, grace_, window_, retention_;
  std::unique_ptr<PendingTable> table_;
  std::unique_ptr<SliceTable> slices_;  // null: not sliced
  bool prejoined_ = false;
  std::unique_ptr<Estimator> estimator_;  // binary streams with performance.reference_pairs > 0
  std::map<std::int64_t, Window> windows_;
  std::map<std::int64_t, std::vector<LogRecord>> unwritten_;  // per window, until flush()
  std::array<std::uint64_t, core::kLabelLagBuckets> lag_buckets_{};
  double lag_sum_ = 0;
  std::int64_t last_now_ = 0;
  std::int64_t last_sweep_ = 0;
};

}  // namespace mltap::performance
