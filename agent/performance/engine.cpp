#include "agent/performance/engine.hpp"

#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "core/log.hpp"

#include "core/time.hpp"

namespace mltap::performance {

PerformanceEngine::PerformanceEngine(PerformanceConfig config, std::string state_dir)
    : config_(std::move(config)), findings_(config_.findings),
      snapshot_(std::make_shared<core::PerformanceSnapshot>()) {
  now_ = static_cast<std::int64_t>(core::unix_now_ns());
  if (!state_dir.empty()) {
    dir_ = state_dir + "/performance";
    ::mkdir(state_dir.c_str(), 0700);  // may not exist yet (an EEXIST or a failure shows below)
    struct stat st {};
    if ((::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) || ::stat(dir_.c_str(), &st) != 0 ||
        !S_ISDIR(st.st_mode)) {
      // The agent keeps running (as with the detectors' state): the join works, in memory.
      core::log::error("performance: cannot use {}: {}; pending labels are kept in memory only and "
                    "do not survive a restart",
                    dir_, std::strerror(errno));
      dir_.clear();
    }
  }
  findings_.attach_state(dir_);
  if (!dir_.empty()) {
    // The tables of the previous run: reopened before the first batch.
    if (DIR* d = ::opendir(dir_.c_str())) {
      std::vector<std::string> tables;
      while (dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        if (name.size() > 6 && name.compare(name.size() - 6, 6, ".table") == 0) tables.push_back(name);
      }
      ::closedir(d);
      for (const auto& name : tables) {
        const auto id = PendingTable::peek(dir_ + "/" + name);
        if (!id || StreamJoin::file_stem(id->stream) + ".table" != name) {
          core::log::warn("performance: {}/{} is not a pending table of this version; ignored", dir_, name);
          continue;
        }
        if (id->task == format::Task::none || id->labels_stream.empty()) continue;
        // A pre-joined stream's table (labels stream = itself) is reopened only while configured so.
        if (id->labels_stream == id->stream) {
          const auto c = config_.streams.find(id->stream);
          if (c == config_.streams.end() || !c->second.prejoined) continue;
        }
        if (open_join(*id)) core::log::info("performance: pending table of '{}' reopened", id->stream);
      }
    }
  }
  for (const auto& [stream, s] : config_.streams) {
    if (!joins_.count(stream)) open_join(PendingTable::Identity{stream, s.labels_stream, s.task, 0});
  }
  publish_now();
}

PerformanceEngine::~PerformanceEngine() = default;

StreamJoin* PerformanceEngine::open_join(const PendingTable::Identity& id) {
  if (joins_.size() >= config_.max_streams) {
    if (streams_refused_++ == 0) {
      core::log::warn("performance: more than performance.max_streams ({}) predictions streams; '{}' "
                   "is not joined",
                   config_.max_streams, id.stream);
    }
    return nullptr;
  }
  std::unique_ptr<StreamJoin> j;
  try {
    j = std::make_unique<StreamJoin>(id, config_, dir_);
  } catch (const std::exception& e) {
    core::log::error("performance: stream '{}': {}", id.stream, e.what());
    return nullptr;
  }
  StreamJoin* raw = j.get();
  if (!raw->is_prejoined()) by_labels_[id.labels_stream].push_back(raw);
  joins_[id.stream] = std::move(j);
  core::log::info("performance: joining '{}' ({}) with labels from '{}'", id.stream,
               format::task_name(id.task), id.labels_stream);
  return raw;
}

// The configuration's settings win over the producer's declaration.
StreamJoin* PerformanceEngine::join_for(const core::StreamInfo& info) {
  if (auto it = joins_.find(info.name); it != joins_.end()) return it->second.get();
  PendingTable::Identity id{info.name, info.labels_stream, info.task, 0};
  if (auto c = config_.streams.find(info.name); c != config_.streams.end()) {
    id.labels_stream = c->second.labels_stream;
    id.task = c->second.task;
  }
  if (id.task == format::Task::none || id.labels_stream.empty()) return nullptr;
  return open_join(id);
}

void PerformanceEngine::on_batch(const core::DecodedBatch& b) {
  // Left by producers that ended before this agent started: possibly read before (docs/deploy.md,
  // "Backlog"); joining it again would count its labels twice.
  if (!b.stream || b.backlog) return;
  if (auto it = joins_.find(b.stream->name); it != joins_.end() && it->second->is_prejoined()) {
    components_.try_emplace(b.stream->name, b.stream->component);
    it->second->add_prejoined(b, now_);
    return;
  }
  if (b.stream->kind == format::StreamKind::predictions) {
    components_.try_emplace(b.stream->name, b.stream->component);
    if (StreamJoin* j = join_for(*b.stream)) j->add_predictions(b, now_);
  } else if (b.stream->kind == format::StreamKind::labels) {
    const auto it = by_labels_.find(b.stream->name);
    if (it == by_labels_.end()) {
      labels_without_predictions_stream_ += b.rows;
      return;
    }
    for (StreamJoin* j : it->second) j->add_labels(b, now_);
  }
}

void PerformanceEngine::on_tick(std::uint64_t now) {
  now_ = std::max<std::int64_t>(now_, static_cast<std::int64_t>(now));
  for (auto& [name, j] : joins_) j->tick(now_);
  if (now >= last_publish_ + 1'000'000'000ULL) {
    last_publish_ = now;
    publish_now();
  }
}

void PerformanceEngine::publish_now() {
  auto snap = std::make_shared<core::PerformanceSnapshot>();
  snap->taken_unix_ns = static_cast<std::uint64_t>(now_);
  snap->labels_without_predictions_stream = labels_without_predictions_stream_;
  for (auto& [name, j] : joins_) snap->streams.push_back(j->state());
  for (const auto& st : snap->streams) {
    const auto c = config_.streams.find(st.stream);
    const StreamSettings* settings = c == config_.streams.end() ? nullptr : &c->second;
    std::vector<core::InputDrift> inputs;
    if (drift_source_) inputs = drift_source_(st.stream, settings ? settings->inputs : std::vector<std::string>{});
    const auto comp = components_.find(st.stream);
    findings_.evaluate(st, comp == components_.end() ? std::string() : comp->second, settings, inputs,
                       static_cast<std::uint64_t>(now_));
  }
  findings_.save_if_changed();
  snap->open_findings = findings_.open();
  snap->closed_findings = findings_.closed();
  std::lock_guard<std::mutex> lock(snapshot_mutex_);
  snapshot_ = std::move(snap);
}

}  // namespace mltap::performance
