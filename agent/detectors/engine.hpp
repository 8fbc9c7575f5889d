// The detector engine: per stream and per feature state, updated by the single ingest thread
// (BatchSink), with immutable snapshots published for any number of reader threads.
//
// Threading: on_batch/on_tick/flush are called from one thread only. snapshot() may be called
// from any thread: it copies the shared_ptr to the last published core::DetectorSnapshot under a mutex
// held only for that copy. The writer never waits for it: it publishes with try_lock and, when a
// reader holds the lock, keeps the new snapshot and publishes it on the next tick. (A mutex
// rather than std::atomic<std::shared_ptr>: libstdc++ 12's version unlocks with relaxed order,
// a data race ThreadSanitizer reports.)
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <vector>

#include "agent/detectors/config.hpp"
#include "agent/detectors/profile.hpp"
#include "core/batch.hpp"
#include "core/detector_state.hpp"
#include "core/finding.hpp"
#include "core/state_store.hpp"

namespace mltap::detectors {

struct EngineState;
struct StreamState;
struct ReloadMailbox;

class DetectorEngine final : public core::BatchSink, public core::Checkpointable {
 public:
  // Loads every configured reference file now: throws ProfileError naming the stream and file.
  explicit DetectorEngine(EngineConfig config);
  ~DetectorEngine() override;
  DetectorEngine(const DetectorEngine&) = delete;
  DetectorEngine& operator=(const DetectorEngine&) = delete;

  void on_batch(const core::DecodedBatch& batch) override;
  void on_tick(std::uint64_t now_unix_ns) override;
  // Ends the open windows that hold at least one record (offline use: end of file) and publishes.
  void flush(std::uint64_t now_unix_ns);
  // Publishes a snapshot now, whatever the interval (writer thread; tests, shutdown).
  void publish_now();
  // Uses `profile` as the reference of `stream` (before its first record; offline CLI, tests).
  void set_reference(const std::string& stream, std::shared_ptr<const ReferenceProfile> profile,
                     std::string path = {});

  // Reload (SIGHUP; engine_reload.cpp), from any thread: loads every reference file `next` names
  // now and throws ProfileError naming the stream and file, changing nothing, when one is bad.
  // Otherwise hands `next` and the profiles to the thread that calls on_batch/on_tick, which
  // applies them at its next call and says per stream what changed: new thresholds and other
  // settings (the stream's windows and sequential detectors restart on its current reference),
  // a reference file whose content changed (swapped when it has the stream's shape, else kept
  // and said). Streams, findings (ids, onsets) and counters are kept. Waits up to `wait` for
  // that; nullopt when it did not happen in time (it still happens at the next tick).
  std::optional<std::vector<std::string>> reload(EngineConfig next, std::chrono::milliseconds wait);

  // Checkpoints (engine_checkpoint.cpp), on the thread that calls on_batch (or once it stopped):
  // per stream its pinned reference ("detectors.reference-<hash>", once) and open findings
  // ("detectors.stream-<hash>"), and the next finding id ("detectors.engine"), so that ids never
  // repeat. Only what changed since the last call. restore() before the first batch: streams come back with their reference and their
  // findings open under the same ids; a restored reference is never pinned again.
  std::vector<core::StateDocument> checkpoint() override;
  std::string state_prefix() const override { return "detectors."; }
  std::uint32_t state_version() const override;
  std::vector<std::string> restore(
      const std::vector<std::pair<std::string, core::StateReadResult>>& stored) override;

  std::shared_ptr<const core::DetectorSnapshot> snapshot() const {
    std::lock_guard<std::mutex> lock(publish_mu_);
    return published_;
  }
  const EngineConfig& config() const noexcept;
  // Bytes of per-stream state (excluding snapshots), for the memory benchmark.
  std::uint64_t memory_bytes() const noexcept;

 private:
  StreamState* stream_for(const core::DecodedBatch& batch);
  void publish(std::uint64_t now, bool force);
  // Moves pending_ into published_; `wait` false: only if no reader holds the lock right now.
  void hand_over(bool wait);
  void apply_reload();  // writer thread: a staged reload, if any

  std::unique_ptr<ReloadMailbox> reload_;  // engine_reload.cpp

  std::unique_ptr<EngineState> state_;  // the writer's side (engine_state.hpp)
  mutable std::mutex publish_mu_;
  std::shared_ptr<const core::DetectorSnapshot> published_;  // guarded by publish_mu_
  std::shared_ptr<const core::DetectorSnapshot> pending_;    // writer only: built, not yet handed over
};

}  // namespace mltap::detectors
