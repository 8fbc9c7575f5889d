// The performance component's sink: routes the ingest layer's batches of predictions streams
// (kind predictions, with a task and a labels stream, declared by the producer or configured) and
// of label streams (kind labels) to each predictions stream's StreamJoin, and publishes their
// state. Threading: on_batch/on_tick run on the ingest thread only; snapshot() from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/performance/config.hpp"
#include "agent/performance/findings.hpp"
#include "agent/performance/stream_join.hpp"
#include "core/batch.hpp"
#include "core/input_drift.hpp"
#include "core/performance_state.hpp"

namespace mltap::performance {

class PerformanceEngine : public core::BatchSink {
 public:
  // `state_dir` empty: tables in memory only. Otherwise tables and joined logs live in
  // <state_dir>/performance, and the tables found there are reopened now (labels that arrive
  // after a restart join the predictions read before it). A directory that cannot be used is
  // logged and the tables are kept in memory.
  PerformanceEngine(PerformanceConfig config, std::string state_dir);
  ~PerformanceEngine() override;

  void on_batch(const core::DecodedBatch& batch) override;
  void on_tick(std::uint64_t now_unix_ns) override;
  void publish_now();
  // The drift state of each predictions stream's inputs, for the findings' abnormality level
  // (set by the composition root before the ingest thread starts; unset: level "inputs_unknown").
  void set_input_drift_source(core::InputDriftSource source) { drift_source_ = std::move(source); }
  std::shared_ptr<const core::PerformanceSnapshot> snapshot() const {
    std::lock_guard<std::mutex> lock(snapshot_mutex_);
    return snapshot_;
  }

 private:
  StreamJoin* join_for(const core::StreamInfo& info);
  StreamJoin* open_join(const PendingTable::Identity& id);

  PerformanceConfig config_;
  std::string dir_;
  std::map<std::string, std::unique_ptr<StreamJoin>> joins_;       // by predictions stream
  std::map<std::string, std::vector<StreamJoin*>> by_labels_;      // labels stream -> joins
  std::uint64_t labels_without_predictions_stream_ = 0;
  std::uint64_t streams_refused_ = 0;
  std::int64_t now_ = 0;
  std::map<std::string, std::string> components_;  // predictions stream -> component, as seen
  PerformanceFindings findings_;
  core::InputDriftSource drift_source_;
  std::uint64_t last_publish_ = 0;
  mutable std::mutex snapshot_mutex_;
  std::shared_ptr<const core::PerformanceSnapshot> snapshot_;
};

}  // namespace mltap::performance
