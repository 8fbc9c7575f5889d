// The detector engine: per stream and per feature state, updated by the single ingest thread
// (BatchSink), with immutable snapshots published for any number of reader threads.
//
// Threading: on_batch/on_tick/flush are called from one thread only. snapshot() may be called
// from any thread: it copies the shared_ptr to the last published EngineSnapshot under a mutex
// held only for that copy. The writer never waits for it: it publishes with try_lock and, when a
// reader holds the lock, keeps the new snapshot and publishes it on the next tick. (A mutex
// rather than std::atomic<std::shared_ptr>: libstdc++ 12's version unlocks with relaxed order,
// a data race ThreadSanitizer reports.)
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "detectors/config.hpp"
#include "detectors/finding.hpp"
#include "detectors/profile.hpp"
#include "ingest/batch.hpp"

namespace mltap::detect {

struct MethodScore {
  std::string method;     // "wasserstein", "psi", "ks", "js", "hellinger", "linf", "chi2", ...
  double score = NAN;
  double threshold = NAN; // NaN: reported, not used for decisions
  double p_value = NAN;
  double error_bound = NAN;  // |binned - exact| bound where stated (ks, wasserstein)
  bool decides = false;      // one of the configured decision methods of this feature kind
};

struct FeatureResult {
  std::string name;
  FeatureKind kind = FeatureKind::numeric;
  bool enabled = true;
  bool drifted = false;          // effect over threshold and (no p-value or BH-significant)
  std::vector<MethodScore> scores;    // last window vs the reference
  std::vector<MethodScore> previous;  // last window vs the window before it
  double nan_ratio = 0, inf_ratio = 0, out_of_range_ratio = 0, unseen_ratio = NAN;
  std::vector<std::string> quality_flags;  // "nan_rate", "inf_rate", "out_of_range", "constant", ...
  std::uint64_t values = 0;      // values in the last window
  double mean = NAN, sd = NAN, min = NAN, max = NAN;
  double ref_mean = NAN, ref_sd = NAN;
  double sequential_ratio = 0;   // max CUSUM/PH statistic over its threshold since the last window
  double max_ratio = 0;          // largest score/threshold among decision methods
  std::string max_method;
};

enum class ReferenceSource { pending, pinned, file };
const char* reference_source_name(ReferenceSource s) noexcept;

struct StreamSnapshot {
  std::string name;
  std::string component;
  std::string kind;    // stream kind (features, predictions, embeddings, ...)
  std::string layout;  // how rows are analyzed (features, predictions, embeddings)
  ReferenceSource reference = ReferenceSource::pending;
  std::string reference_path;
  std::string reference_error;      // a configured file that failed to load (then pinned)
  std::uint64_t reference_rows = 0;
  std::uint64_t pin_progress = 0;   // rows pinned so far (of pin_target) while pending
  std::uint64_t pin_target = 0;
  std::uint64_t records_total = 0;
  std::uint64_t records_rejected = 0;  // schema mismatch (feature count): not analyzed
  std::uint64_t windows_closed = 0;
  std::uint64_t last_window_records = 0;
  std::uint64_t last_window_end_unix_ns = 0;
  bool drift_detected = false;
  std::uint32_t drifted_features = 0;
  std::uint32_t features_analyzed = 0;
  std::uint32_t features_cut = 0;   // over max_features_per_stream
  double embedding_mean_shift = NAN;
  double embedding_mean_cosine = NAN;
  std::uint64_t memory_bytes = 0;
  std::shared_ptr<const std::vector<FeatureResult>> features;  // never null
};

struct EngineCounters {
  std::uint64_t streams_cut = 0;     // distinct streams over max_streams (first 4096 remembered)
  std::uint64_t records_cut = 0;     // records of those streams
  std::uint64_t features_cut = 0;    // features over max_features_per_stream, all streams
  std::uint64_t records_rejected = 0;
  std::uint64_t windows_closed = 0;
  std::uint64_t findings_opened = 0;
};

struct EngineSnapshot {
  std::uint64_t generated_unix_ns = 0;
  std::uint64_t sequence = 0;
  std::vector<std::shared_ptr<const StreamSnapshot>> streams;
  std::vector<Finding> open_findings;
  std::vector<Finding> closed_findings;  // most recent first, bounded
  EngineCounters counters;
};

class DetectorEngine final : public ingest::BatchSink {
 public:
  // Loads every configured reference file now: throws ProfileError naming the stream and file.
  explicit DetectorEngine(EngineConfig config);
  ~DetectorEngine() override;
  DetectorEngine(const DetectorEngine&) = delete;
  DetectorEngine& operator=(const DetectorEngine&) = delete;

  void on_batch(const ingest::DecodedBatch& batch) override;
  void on_tick(std::uint64_t now_unix_ns) override;
  // Ends the open windows that hold at least one record (offline use: end of file) and publishes.
  void flush(std::uint64_t now_unix_ns);
  // Publishes a snapshot now, whatever the interval (writer thread; tests, shutdown).
  void publish_now() { publish(now_ns_, true); }
  // Uses `profile` as the reference of `stream` (before its first record; offline CLI, tests).
  void set_reference(const std::string& stream, std::shared_ptr<const ReferenceProfile> profile,
                     std::string path = {});

  std::shared_ptr<const EngineSnapshot> snapshot() const {
    std::lock_guard<std::mutex> lock(publish_mu_);
    return published_;
  }
  const EngineConfig& config() const noexcept { return config_; }
  // Bytes of per-stream state (excluding snapshots), for the memory benchmark.
  std::uint64_t memory_bytes() const noexcept;

 private:
  struct Stream;
  Stream* stream_for(const ingest::DecodedBatch& batch);
  void publish(std::uint64_t now, bool force);
  // Moves pending_ into published_; `wait` false: only if no reader holds the lock right now.
  void hand_over(bool wait);

  EngineConfig config_;
  std::vector<std::unique_ptr<Stream>> streams_;
  std::unordered_map<std::string, std::size_t> by_name_;
  const ingest::StreamInfo* last_info_ = nullptr;
  std::size_t last_index_ = 0;
  std::unordered_map<std::string, std::shared_ptr<const ReferenceProfile>> preloaded_;
  std::unordered_map<std::string, std::string> preload_errors_;
  std::vector<std::string> cut_names_;
  EngineCounters counters_;
  std::uint64_t now_ns_ = 0;
  bool ticked_ = false;
  std::uint64_t last_publish_ns_ = 0;
  bool dirty_ = true;
  std::uint64_t next_finding_id_ = 1;
  std::uint64_t sequence_ = 0;
  std::vector<Finding> closed_;  // ring of recently closed findings (oldest first)
  mutable std::mutex publish_mu_;
  std::shared_ptr<const EngineSnapshot> published_;  // guarded by publish_mu_
  std::shared_ptr<const EngineSnapshot> pending_;    // writer only: built, not yet handed over
  friend struct EngineAccess;
};

}  // namespace mltap::detect
