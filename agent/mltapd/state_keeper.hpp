// Keeps the components' state in the state directory (core::StateStore): restores it before the
// components start, checkpoints it on the ingest thread's ticks (only what changed, at most every
// `interval`) and at a clean stop, and writes it on its own thread, so that fsync never stalls
// the ingest thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/batch.hpp"
#include "core/state_store.hpp"

namespace mltap::mltapd {

class StateKeeper final : public core::BatchSink {
 public:
  StateKeeper(std::string dir, std::chrono::nanoseconds interval,
              std::vector<core::Checkpointable*> parts);
  ~StateKeeper() override;
  StateKeeper(const StateKeeper&) = delete;
  StateKeeper& operator=(const StateKeeper&) = delete;

  // Before the parts start: hands each its stored documents, logs what could not be used.
  void restore();
  void start();
  // Once the parts' thread has stopped: a last checkpoint, written before this returns.
  void stop();

  // Any thread (a scrape): written and failed documents, pending ones, failing now.
  core::StateWriteCounts counts() const noexcept;

  // Ingest thread: checkpoints on ticks.
  void on_batch(const core::DecodedBatch&) override {}
  void on_tick(std::uint64_t now_unix_ns) override;

 private:
  void collect();
  void run();
  // Writes what is pending; failed documents go back to pending_. True if any failed.
  bool write_pending(std::unique_lock<std::mutex>& lock);

  core::StateStore store_;
  std::chrono::nanoseconds interval_;
  std::vector<core::Checkpointable*> parts_;
  std::uint64_t last_checkpoint_ns_ = 0;  // ingest thread
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, core::StateDocument> pending_;  // newest document by name (mu_)
  bool stopping_ = false;                               // mu_
  std::string last_error_;  // writer thread (and restore(), before it starts)
  std::atomic<std::uint64_t> written_{0}, failed_{0}, pending_count_{0};
  std::atomic<bool> failing_{false};
  std::thread writer_;
};

}  // namespace mltap::mltapd
