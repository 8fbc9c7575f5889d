#include "agent/mltapd/state_keeper.hpp"

#include <algorithm>

#include "core/log.hpp"

namespace mltap::mltapd {

StateKeeper::StateKeeper(std::string dir, std::chrono::nanoseconds interval,
                         std::vector<core::Checkpointable*> parts)
    : store_(std::move(dir)), interval_(interval), parts_(std::move(parts)) {}

StateKeeper::~StateKeeper() { stop(); }

void StateKeeper::restore() {
  std::string error;
  if (!store_.prepare(error)) {
    core::log::error("state: {} (state is not kept until this is fixed; retried at each change)", error);
    last_error_ = error;
    failing_ = true;
  }
  for (auto* part : parts_) {
    std::vector<std::pair<std::string, core::StateReadResult>> stored;
    for (const auto& name : store_.list(part->state_prefix()))
      stored.emplace_back(name, store_.read(name, part->state_version()));
    std::size_t ok = 0;
    for (const auto& [name, r] : stored) ok += r.status == core::StateReadResult::Status::ok;
    for (const auto& problem : part->restore(stored)) core::log::warn("state: {}", problem);
    if (!stored.empty()) {
      core::log::info("state: restored {} of {} '{}' documents from {}", ok, stored.size(),
                   part->state_prefix(), store_.dir());
    }
  }
}

void StateKeeper::start() {
  if (!writer_.joinable()) writer_ = std::thread([this] { run(); });
}

void StateKeeper::on_tick(std::uint64_t now) {
  if (now - last_checkpoint_ns_ < static_cast<std::uint64_t>(interval_.count())) return;
  last_checkpoint_ns_ = now;
  collect();
}

void StateKeeper::collect() {
  std::vector<core::StateDocument> docs;
  for (auto* part : parts_) {
    for (auto& d : part->checkpoint()) docs.push_back(std::move(d));
  }
  if (docs.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& d : docs) {
      auto name = d.name;
      pending_[name] = std::move(d);  // a newer document replaces one not yet written
    }
    pending_count_ = pending_.size();
  }
  cv_.notify_one();
}

void StateKeeper::stop() {
  if (!writer_.joinable()) return;
  collect();  // the parts' thread has stopped: this thread may checkpoint now
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  writer_.join();
}

core::StateWriteCounts StateKeeper::counts() const noexcept {
  core::StateWriteCounts c;
  c.written = written_.load(std::memory_order_relaxed);
  c.failed = failed_.load(std::memory_order_relaxed);
  c.pending = pending_count_.load(std::memory_order_relaxed);
  c.failing = failing_.load(std::memory_order_relaxed);
  return c;
}

void StateKeeper::run() {
  std::unique_lock<std::mutex> lock(mu_);
  bool failed = false;
  for (;;) {
    if (failed) {
      // Retry what failed (disk full, directory removed) after a while, not in a busy loop.
      cv_.wait_for(lock, std::max<std::chrono::nanoseconds>(interval_, std::chrono::seconds(1)),
                   [this] { return stopping_; });
    } else {
      cv_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
    }
    failed = write_pending(lock);
    if (stopping_ && (pending_.empty() || failed)) return;
  }
}

bool StateKeeper::write_pending(std::unique_lock<std::mutex>& lock) {
  auto docs = std::move(pending_);
  pending_.clear();
  lock.unlock();
  std::string first_error;
  std::vector<core::StateDocument> failed;
  for (auto& [name, doc] : docs) {
    std::string err;
    if (!store_.write(doc, err)) {
      if (first_error.empty()) first_error = err;
      failed.push_back(std::move(doc));
      failed_++;
    } else {
      written_++;
    }
  }
  failing_ = !first_error.empty();
  // Logged when it starts failing or the reason changes, not on every attempt.
  if (!first_error.empty() && first_error != last_error_) {
    core::log::error("state: {} (retrying; state is not kept until this is fixed)", first_error);
  } else if (first_error.empty() && !last_error_.empty()) {
    core::log::info("state: writing to {} works again", store_.dir());
  }
  last_error_ = first_error;
  lock.lock();
  for (auto& d : failed) {
    auto name = d.name;
    pending_.emplace(std::move(name), std::move(d));  // unless a newer one came meanwhile
  }
  pending_count_ = pending_.size();
  return !failed.empty();
}

}  // namespace mltap::mltapd
