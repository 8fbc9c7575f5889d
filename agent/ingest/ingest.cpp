#include "agent/ingest/ingest.hpp"

#include <dirent.h>
#include <malloc.h>
#include <sys/inotify.h>
#include <fnmatch.h>
#include <limits.h>
#include <signal.h>
#include <sys/vfs.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <utility>

#include <nlohmann/json.hpp>
#include "core/log.hpp"

#include "agent/ingest/decode.hpp"
#include "agent/ingest/feature_stats.hpp"
#include "agent/ingest/guarded_memory.hpp"
#include "core/pidfd.hpp"
#include "core/config_reader.hpp"
#include "core/time.hpp"
#include "mltap/naming.hpp"

namespace mltap::ingest {

using core::BatchSink;
using core::DecodedBatch;
using core::DropReason;
using core::FeatureSnapshot;
using core::IngestSnapshot;
using core::kInvalidReasonCount;
using core::ProducerId;
using core::ProducerSnapshot;
using core::ProducerState;
using core::SegmentIdentity;
using core::StreamInfo;
using core::StreamSnapshot;
using core::unix_now_ns;

using namespace std::chrono_literals;

namespace {
// Segments waiting for a slot are retried at most this often by time; a slot freed by a
// retired segment of the same uid retries them at once.
constexpr std::uint64_t kWaitRetryMaxNs = 60'000'000'000ull;
constexpr std::uint64_t kIdleAfterNs = 1'000'000'000ull;  // no new record for this long: idle
constexpr double kReadBacklogShare = 0.25;  // of a lane's ring or index: read now (read_delay)
constexpr std::uint64_t kPublishCostFactor = 100;  // snapshots: at least 100x their cost apart
// An idle segment's producer counters and state are read this often, not at every scan and
// snapshot: each read of another process's ring is a cache and TLB miss, and thousands of idle
// rings made those misses most of the agent's cost.
constexpr std::uint64_t kIdleRefreshNs = 2'000'000'000ull;
}  // namespace

void parse_ingest_config(core::ConfigSection& s, IngestConfig& c) {
  using std::chrono::nanoseconds;
  if (auto v = s.get_string("namespace")) {
    if (!naming::valid_namespace(*v)) s.fail("namespace", "must match [a-z0-9_-]{1,31}");
    c.ns = *v;
  }
  if (auto v = s.get_string("shm_dir")) {
    if (v->empty() || (*v)[0] != '/') s.fail("shm_dir", "must be an absolute path");
    c.shm_dir = *v;
  }
  if (auto v = s.get_string("proc_dir")) {
    if (v->empty() || (*v)[0] != '/') s.fail("proc_dir", "must be an absolute path");
    c.proc_dir = *v;
  }
  if (auto v = s.get_duration("poll_interval", 100us, 1s)) c.poll_interval = *v;
  if (auto v = s.get_duration("scan_interval", 10ms, 60s)) c.scan_interval = *v;
  if (auto v = s.get_duration("rescan_interval", 1s, std::chrono::hours(1))) c.rescan_interval = *v;
  if (auto v = s.get_duration("idle_poll_interval", 1ms, 1s)) c.idle_poll_interval = *v;
  if (auto v = s.get_duration("read_delay", 0s, 1s)) c.read_delay = *v;
  if (auto v = s.get_duration("stats_window", 1s, std::chrono::hours(24))) c.stats_window = *v;
  if (auto v = s.get_duration("dead_producer_grace", 0s, std::chrono::hours(24))) c.dead_producer_grace = *v;
  if (auto v = s.get_duration("closed_segment_grace", 0s, std::chrono::hours(1))) c.closed_segment_grace = *v;
  if (auto v = s.get_duration("snapshot_interval", 10ms, 60s)) c.snapshot_interval = *v;
  if (auto v = s.get_int("max_streams", 1, 100000)) c.max_streams = static_cast<std::uint32_t>(*v);
  if (auto v = s.get_int("max_streams_per_uid", 1, 100000)) c.max_streams_per_uid = static_cast<std::uint32_t>(*v);
  if (auto v = s.get_int("max_segments_per_uid", 1, 1000000)) c.max_segments_per_uid = static_cast<std::uint32_t>(*v);
  if (auto v = s.get_int("max_features_per_stream", 1, 65536)) c.max_features_per_stream = static_cast<std::uint32_t>(*v);
  if (auto v = s.get_bool("remove_dead_segments")) c.remove_dead_segments = *v;
  if (auto v = s.get_bytes("max_segment_bytes", 12288, 64ull << 30)) c.reader.max_segment_bytes = *v;
  if (auto v = s.get_int("max_records_per_poll", 1, 1 << 24)) c.reader.max_records_per_poll = static_cast<std::uint64_t>(*v);
  if (auto v = s.get_bytes("max_record_bytes", 4096, 1ull << 30)) c.reader.max_record_bytes = *v;
  if (auto v = s.get_bool("verify_producers")) c.verify_producers = *v;
  if (auto v = s.get_int_list_map("stream_owners", 0, 0xfffffffeLL, [](const std::string& pattern) {
        // A pattern is a stream name in which '*' and '?' may stand for characters.
        std::string probe = pattern;
        for (char& ch : probe) {
          if (ch == '*' || ch == '?') ch = 'x';
        }
        return naming::valid_stream_name(probe) ? std::string()
                                                : std::string("not a stream name pattern (a stream name; '*' and '?' match characters)");
      })) {
    c.stream_owners.clear();
    for (auto& [pattern, uids] : *v) {
      std::vector<std::uint32_t> u;
      for (auto x : uids) u.push_back(static_cast<std::uint32_t>(x));
      c.stream_owners.emplace_back(pattern, std::move(u));
    }
  }
  if (auto v = s.get_string_list("artifact_dirs")) {
    for (const auto& d : *v) {
      if (d.empty() || d[0] != '/' || d.find("/../") != std::string::npos ||
          (d.size() >= 3 && d.compare(d.size() - 3, 3, "/..") == 0)) {
        s.fail("artifact_dirs", "'" + d + "' is not an absolute path without '..'");
      }
    }
    c.artifact_dirs = *v;
  }
  s.finish();
}

// ---------------------------------------------------------------------------------------------

struct Ingest::Segment {
  std::unique_ptr<SegmentReader> reader;
  std::string path;
  std::uint64_t dev = 0, ino = 0;
  ProducerState state = ProducerState::alive;
  std::uint64_t gone_since = 0;      // agent time it was seen dead or closed
  std::uint64_t last_new_data = 0;   // agent time of the last poll that found records
  std::uint64_t last_empty_poll = 0; // agent time of the last poll that found nothing new
  std::uint64_t last_poll = 0;       // agent time of the last poll (read_delay)
  bool fault_counted = false;        // its mapping faulted and that was counted (truncated)
  // read_delay: when its backlog is looked at next, and how long a quarter of its ring took to
  // fill at the rate of its last read (0: not known yet).
  std::uint64_t next_backlog_check = 0;
  double quarter_fill_ns = 0;
  std::uint64_t rows_read = 0;
  std::uint64_t rows_overwritten = 0;
  ProducerCounters counters;         // last seen producer counters
  // Recent write rate: rows_written at the start of the rate interval.
  std::uint64_t rate_base_rows = 0, rate_base_time = 0;
  double write_rate = 0;
  MergedStream* stream = nullptr;
  UniqueFd pidfd;                   // taken when the producer was verified; signals go through it
  ProcessCredentials credentials;
  bool backlog = false;             // its producer ended before this agent started (DecodedBatch)
  bool idle = false;                // in idle_ (no new record for a while), else in hot_
  std::uint64_t last_refresh = 0;   // agent time its counters were last read
  std::uint64_t last_state = 0;     // agent time its state was last read
  PositionKey position_key;         // the saved read position's key
};

// A stream as the agent sees it: the producers writing one stream name merged, with their totals.
struct Ingest::MergedStream : core::StreamTotals {
  StreamInfo info;
  std::uint32_t owner_uid = 0;  // the uid whose verified segment created it
  std::uint64_t pending_deaths = 0;
  std::size_t cols = 0;  // columns of the feature statistics (from declared shape or first record)
  std::uint64_t features_cut = 0;
  FeatureStats stats;
  bool stats_ready = false;
  // Record rate.
  std::uint64_t rate_base_records = 0, rate_base_time = 0;
  double record_rate = 0;
};

class Ingest::Visitor : public RecordVisitor {
 public:
  Visitor(Ingest& in, Segment& seg) : in_(in), seg_(seg) {}
  void on_record(const RecordView& r) override {
    MergedStream& st = *seg_.stream;
    const std::size_t cols = static_cast<std::size_t>(r.row_elements);
    const std::size_t n = static_cast<std::size_t>(r.rows) * cols;
    auto& buf = in_.decode_buf_;
    if (buf.size() < n) buf.resize(n);
    decode_to_double(r.dtype, r.payload.data(), n, buf.data());
    const std::span<const double> values(buf.data(), n);

    st.records_total += r.rows;
    if (seg_.backlog) st.backlog_total += r.rows;
    st.last_record_unix_ns = std::max(st.last_record_unix_ns, r.timestamp_ns);
    seg_.rows_read += r.rows;

    if (!st.stats_ready) {
      const std::size_t width = std::min<std::size_t>(cols, in_.config_.max_features_per_stream);
      st.cols = cols;
      st.features_cut = cols - width;
      in_.features_cut_ += st.features_cut;
      st.stats.reset(st.info.kind == format::StreamKind::embeddings ? 0 : width,
                     static_cast<std::uint64_t>(in_.config_.stats_window.count()), unix_now_ns());
      st.stats_ready = true;
    }
    if (cols == st.cols) {
      st.stats.add(values, r.rows, cols);
    } else {
      st.schema_mismatch_total++;
    }

    DecodedBatch b;
    b.stream = &st.info;
    b.producer = seg_.reader->identity().producer;
    b.seq = r.seq;
    b.timestamp_ns = r.timestamp_ns;
    b.dtype = r.dtype;
    b.row_shape = r.row_shape;
    b.rows = r.rows;
    b.cols = cols;
    b.values = values;
    b.trace_ids = r.trace_ids;
    b.backlog = seg_.backlog;
    for (BatchSink* s : in_.sinks_) s->on_batch(b);
  }

 private:
  Ingest& in_;
  Segment& seg_;
};

Ingest::Ingest(IngestConfig config) : config_(std::move(config)) {
  pid_ns_inode_ = naming::pid_namespace_inode(config_.proc_dir, "self");
  snapshot_ = std::make_shared<IngestSnapshot>();
  for (auto cause : {TrustFailure::foreign_pid_ns, TrustFailure::process_gone,
                     TrustFailure::owner_mismatch, TrustFailure::not_mapped,
                     TrustFailure::proc_unreadable, TrustFailure::pidfd_failed,
                     TrustFailure::stream_owner}) {
    unverified_total_[std::string(trust_failure_name(cause))] = 0;  // every cause exported, from 0
  }
  if (!config_.verify_producers) {
    core::log::warn("ingest.verify_producers is off: INSECURE, any local user can make mltapd read, "
                 "trace and signal in the name of any process (docs/security.md)");
  }
  // The trust check believes what proc_dir says: anything but procfs there is a test setup.
  constexpr long kProcSuperMagic = 0x9fa0;
  struct statfs fs {};
  if (config_.verify_producers &&
      (::statfs(config_.proc_dir.c_str(), &fs) != 0 || fs.f_type != kProcSuperMagic)) {
    core::log::warn("ingest.proc_dir {} is not a procfs: producer verification trusts whoever can "
                 "write there", config_.proc_dir);
  }
}

Ingest::~Ingest() {
  stop();
  if (inotify_fd_ >= 0) ::close(inotify_fd_);
  if (dir_fd_ >= 0) ::close(dir_fd_);
  if (presence_fd_ >= 0) {
    // Only the file we created: someone may have replaced the name since (root).
    struct stat st {};
    if (::lstat(presence_path_.c_str(), &st) == 0 && static_cast<std::uint64_t>(st.st_dev) == presence_dev_ &&
        static_cast<std::uint64_t>(st.st_ino) == presence_ino_) {
      ::unlink(presence_path_.c_str());
    }
    ::close(presence_fd_);
  }
}

// The presence file tells closing producers that an agent will drain and remove their rings.
// Created with O_EXCL as mltapd's uid. A name already taken (a file an earlier mltapd left, or one
// another uid created first to squat it) is removed and created anew when the directory lets us
// (our own file; sticky /dev/shm: root owns it, or CAP_FOWNER); otherwise it is logged once with
// the holder's uid, exported as mltap_presence_file_squatted, and retried quietly on each scan.
void Ingest::touch_presence(std::uint64_t now) {
  if (presence_fd_ >= 0) {
    if (now - last_presence_ < 1'000'000'000ull) return;
    last_presence_ = now;
    ::futimens(presence_fd_, nullptr);
    return;
  }
  const std::string path = config_.shm_dir + "/" + naming::agent_presence_file_name(config_.ns);
  const auto create = [&] {
    return ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  };
  int fd = create();
  int err = errno;
  if (fd < 0 && err == EEXIST) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
      const bool ours = S_ISREG(st.st_mode) && st.st_uid == ::geteuid();
      const bool removed = !S_ISDIR(st.st_mode) && ::unlink(path.c_str()) == 0;
      err = errno;
      if (removed) {
        if (!ours) {
          core::log::warn("presence file {} was held by uid {} (mode {:o}); removed it and created mltapd's own", path,
                       st.st_uid, st.st_mode & 07777);
        }
        fd = create();
        err = errno;
      } else if (presence_squatter_ < 0) {
        presence_squatter_ = st.st_uid;
        core::log::warn("presence file {} is held by uid {} ({}) and mltapd cannot replace it ({}): closing "
                     "producers of namespace '{}' will not leave their rings to mltapd; retrying quietly "
                     "(mltap_presence_file_squatted)",
                     path, st.st_uid, S_ISDIR(st.st_mode) ? "a directory" : "mode " + fmt::format("{:o}", st.st_mode & 07777),
                     S_ISDIR(st.st_mode) ? "it is a directory" : std::strerror(err), config_.ns);
        return;
      } else {
        return;
      }
    }
  }
  if (fd < 0) {
    if (presence_squatter_ < 0) {
      presence_squatter_ = std::numeric_limits<std::int64_t>::max();  // warned; not a squatter's uid
      core::log::warn("cannot create presence file {}: {} (retrying quietly)", path, std::strerror(err));
    }
    return;
  }
  const std::string text = std::to_string(::getpid()) + "\n";
  if (::write(fd, text.data(), text.size()) < 0) {
    core::log::warn("cannot write presence file {}: {}", path, std::strerror(errno));
  }
  struct stat st {};
  ::fstat(fd, &st);
  if (presence_squatter_ >= 0) core::log::info("presence file {} created", path);
  presence_fd_ = fd;
  presence_dev_ = static_cast<std::uint64_t>(st.st_dev);
  presence_ino_ = static_cast<std::uint64_t>(st.st_ino);
  presence_path_ = path;
  presence_squatter_ = -1;
  last_presence_ = now;
}

void Ingest::add_sink(BatchSink* sink) { sinks_.push_back(sink); }

void Ingest::start() {
  if (running_.exchange(true)) return;
  thread_ = std::thread([this] { loop(); });
}

void Ingest::stop() {
  if (!running_.exchange(false)) return;
  if (thread_.joinable()) thread_.join();
  run_commands();  // nobody waits forever on a command queued during shutdown
}

void Ingest::loop() {
  while (running_.load(std::memory_order_relaxed)) {
    const std::uint64_t now = unix_now_ns();
    bool more = false;
    run_commands();
    if (now - last_scan_ >= static_cast<std::uint64_t>(config_.scan_interval.count()) ||
        now < last_scan_) {
      scan(now);
      last_scan_ = now;
    }
    // A fresh snapshot was asked for (fresh_snapshot): everything committed is read first.
    const std::uint64_t requested = snapshot_requested_.load(std::memory_order_acquire);
    const bool wanted = requested != snapshot_answered_.load(std::memory_order_relaxed);
    poll_all(now, more, wanted);
    if (now - last_tick_ >= 100'000'000ull || now < last_tick_) {
      for (auto& [name, st] : streams_) st->stats.tick(now);
      for (BatchSink* s : sinks_) s->on_tick(now);
      last_tick_ = now;
    }
    // Nothing hot and nothing found or retired since the last snapshot: a snapshot a second is
    // enough (building one per producer every 250 ms was a good part of the cost of thousands of
    // idle rings); a fresh one is still taken on request (fresh_snapshot).
    const bool quiet = hot_.empty() && !publish_soon_;
    // And snapshots at least 100x their own cost apart (at most 1% of a core): one that took
    // 8 ms (1,000 streams of 32 features) comes 800 ms after the last (at 50x it was 8% of this
    // thread's time there); a small agent's take microseconds and keep snapshot_interval.
    // fresh_snapshot is answered at once regardless.
    const auto interval = std::max<std::uint64_t>(
        static_cast<std::uint64_t>(quiet ? std::max<std::int64_t>(config_.snapshot_interval.count(), 1'000'000'000)
                                         : config_.snapshot_interval.count()),
        publish_cost_ns_ * kPublishCostFactor);
    if (wanted || now < last_publish_ || now - last_publish_ >= interval) {
      const auto t0 = std::chrono::steady_clock::now();
      publish(now);
      publish_cost_ns_ = static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
      // Only a snapshot taken after reading everything answers the request.
      if (wanted) snapshot_answered_.store(requested, std::memory_order_release);
    }
    if (!more) std::this_thread::sleep_for(config_.poll_interval);
  }
}

void Ingest::run_once() {
  const std::uint64_t now = unix_now_ns();
  bool more = false;
  run_commands();
  scan(now);
  do {
    more = false;
    poll_all(now, more, true);
  } while (more);
  for (auto& [name, st] : streams_) st->stats.tick(now);
  for (BatchSink* s : sinks_) s->on_tick(now);
  publish(now);
}

Ingest::MergedStream* Ingest::stream_for(const SegmentIdentity& id, std::uint32_t owner_uid,
                                         std::uint64_t now) {
  auto it = streams_.find(id.stream);
  if (it != streams_.end()) return it->second.get();
  if (streams_.size() >= config_.max_streams) {
    // Full: forget a stream none of whose producers is attached any more, so that streams of
    // ended producers (of any uid) cannot hold the table against live ones forever. Its name is
    // free again (docs/security.md, "Quotas per uid").
    auto victim = streams_.end();
    for (auto sit = streams_.begin(); sit != streams_.end() && victim == streams_.end(); ++sit) {
      const MergedStream* candidate = sit->second.get();
      const bool attached = std::any_of(segments_.begin(), segments_.end(),
                                        [&](const auto& seg) { return seg->stream == candidate; });
      if (!attached) victim = sit;
    }
    if (victim == streams_.end()) return nullptr;
    core::log::info("stream '{}' (owner uid {}) forgotten: no attached producers and ingest.max_streams ({}) "
                 "reached",
                 victim->first, victim->second->owner_uid, config_.max_streams);
    streams_.erase(victim);
  }
  auto st = std::make_unique<MergedStream>();
  st->info.name = id.stream;
  st->owner_uid = owner_uid;
  st->info.component = id.component;
  st->info.kind = id.kind;
  st->info.declared_dtype = id.declared_dtype;
  st->info.row_shape = id.declared_shape;
  st->info.feature_names = id.feature_names;
  st->info.task = id.task;
  st->info.labels_stream = id.labels_stream;
  st->rate_base_time = now;
  if (auto saved = saved_totals_.find(id.stream); saved != saved_totals_.end()) {
    // Counted by the previous agent (state directory): the counters continue from there.
    static_cast<core::StreamTotals&>(*st) = saved->second.totals;
    st->rate_base_records = st->records_total;
    saved_totals_.erase(saved);
  }
  MergedStream* raw = st.get();
  streams_.emplace(id.stream, std::move(st));
  core::log::info("stream '{}' (component '{}', {}) discovered, owned by uid {}", id.stream,
               id.component, format::stream_kind_name(id.kind), owner_uid);
  return raw;
}

bool Ingest::stream_accepts(const std::string& stream, std::uint32_t uid) const {
  bool configured = false;
  for (const auto& [pattern, uids] : config_.stream_owners) {
    if (::fnmatch(pattern.c_str(), stream.c_str(), 0) != 0) continue;
    configured = true;
    if (std::find(uids.begin(), uids.end(), uid) != uids.end()) return true;
  }
  if (configured) return false;
  auto it = streams_.find(stream);
  if (it == streams_.end()) {
    // A stream the previous agent knew keeps its owner across the restart.
    auto saved = saved_totals_.find(stream);
    return saved == saved_totals_.end() || saved->second.owner_uid == uid;
  }
  return it->second->owner_uid == uid;
}

bool Ingest::refuse_unverified(const std::string& path, const FileKey& key, TrustFailure cause,
                               const std::string& detail, const SegmentIdentity& id,
                               std::uint64_t now) {
  auto [it, first] = unverified_.try_emplace(path, Unverified{key, cause, 0, 0, Claim{}});
  Unverified& u = it->second;
  const bool changed = !first && !(u.key == key);
  if (first || changed) {
    // Counted and logged once per file (and again only if the file changed).
    unverified_total_[std::string(trust_failure_name(cause))]++;
    core::log::warn("segment {} refused, producer not verified ({}): claims pid {} uid {} for stream "
                 "'{}': {}",
                 path, trust_failure_name(cause), id.producer.pid, id.uid, id.stream, detail);
    u.backoff = 0;
  } else {
    core::log::debug("segment {} still not verified ({}): {}", path, trust_failure_name(cause), detail);
  }
  u.key = key;
  u.cause = cause;
  // 1 s, doubling up to a minute: a transient cause is retried, boundedly cheaply.
  u.backoff = std::min<std::uint64_t>(u.backoff == 0 ? 1'000'000'000ull : u.backoff * 2, 60'000'000'000ull);
  u.retry_at = now + u.backoff;
  return first || changed;
}

const char* Ingest::quota_exceeded(std::uint32_t uid, const std::string& stream) const {
  std::uint64_t segments = 0;
  std::vector<const MergedStream*> streams;
  bool writes_stream = false;
  for (const auto& seg : segments_) {
    if (seg->reader->file().uid != uid) continue;
    segments++;
    if (seg->stream->info.name == stream) writes_stream = true;
    if (std::find(streams.begin(), streams.end(), seg->stream) == streams.end()) streams.push_back(seg->stream);
  }
  if (segments >= config_.max_segments_per_uid) return "segments";
  if (!writes_stream && streams.size() >= config_.max_streams_per_uid) return "streams";
  return nullptr;
}

void Ingest::remove_waiting(const std::string& path, std::uint64_t dev, std::uint64_t ino, const char* reason) {
  quota_waiting_.erase(path);
  if (!config_.remove_dead_segments) return;
  if (unlink_same_file(path, dev, ino, -1)) {
    removed_total_[reason]++;
    core::log::info("removed waiting segment {} ({}, never attached)", path, reason);
  }
}

bool Ingest::unlink_same_file(const std::string& path, std::uint64_t dev, std::uint64_t ino, std::int64_t uid) {
  const std::size_t prefix = config_.shm_dir.size() + 1;
  if (path.size() <= prefix || path.compare(0, prefix - 1, config_.shm_dir) != 0) return false;
  const std::string name = path.substr(prefix);
  if (name.find('/') != std::string::npos) return false;  // only files directly in shm_dir
  if (dir_fd_ < 0) dir_fd_ = ::open(config_.shm_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd_ < 0) return false;
  // The name must still be the regular file we judged (not a symlink, not another inode, the
  // owner we judged) when it goes; unlinkat on the directory's descriptor, never a path walk.
  struct stat st {};
  if (::fstatat(dir_fd_, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<std::uint64_t>(st.st_dev) != dev || static_cast<std::uint64_t>(st.st_ino) != ino ||
      (uid >= 0 && static_cast<std::int64_t>(st.st_uid) != uid)) {
    return false;
  }
  if (::unlinkat(dir_fd_, name.c_str(), 0) != 0) {
    core::log::warn("cannot remove segment {}: {}", path, std::strerror(errno));
    return false;
  }
  return true;
}

// A refused or waiting file is removed when all of these hold: the producer its header names is
// in our pid namespace and no longer runs (pid and start time), it has been so for
// dead_producer_grace, the file's owner is the uid the header names (the producer's own file,
// not someone's forgery naming it), and at unlink time the name is still that regular file.
// Files of another pid namespace, or whose owner and header disagree, stay: counted in
// mltap_segments{state="rejected"} while they exist (docs/security.md).
void Ingest::reap_refused(std::uint64_t now) {
  if (!config_.remove_dead_segments) return;
  std::size_t removed = 0;
  std::string example;
  auto judge = [&](const std::string& path, Claim& c) -> bool {
    if (c.pid_ns == 0 || c.pid_ns != pid_ns_inode_ || c.header_uid != c.file_uid || c.producer.pid == 0) {
      return false;
    }
    if (now >= c.check_at) {
      auto [it, fresh] = ticks_cache_.try_emplace(c.producer.pid);
      if (fresh) it->second = naming::process_start_ticks(c.producer.pid, config_.proc_dir);
      const bool alive = it->second && *it->second == c.producer.start_ticks;
      if (alive) {
        c.dead_since = 0;
        c.check_backoff = std::min<std::uint64_t>(c.check_backoff == 0 ? 1'000'000'000ull : c.check_backoff * 2,
                                                  30'000'000'000ull);
        c.check_at = now + c.check_backoff;
      } else if (c.dead_since == 0) {
        c.dead_since = now;
      }
    }
    (void)path;
    return c.dead_since != 0 &&
           now - c.dead_since >= static_cast<std::uint64_t>(config_.dead_producer_grace.count());
  };
  for (auto it = unverified_.begin(); it != unverified_.end();) {
    if (judge(it->first, it->second.claim) &&
        unlink_same_file(it->first, it->second.key.dev, it->second.key.ino, it->second.claim.file_uid)) {
      removed_total_["refused_dead"]++;
      if (removed++ == 0) example = it->first;
      it = unverified_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = quota_waiting_.begin(); it != quota_waiting_.end();) {
    if (judge(it->first, it->second.claim) &&
        unlink_same_file(it->first, it->second.key.dev, it->second.key.ino, it->second.claim.file_uid)) {
      removed_total_["producer_dead"]++;
      if (removed++ == 0) example = it->first;
      it = quota_waiting_.erase(it);
    } else {
      ++it;
    }
  }
  if (removed > 0) {
    publish_soon_ = true;
    // One line per scan, not per file: the number of refused files is the refusers' choice.
    core::log::info("removed {} refused or waiting segment(s) whose producer is dead (e.g. {}; "
                 "mltap_segments_removed_total)", removed, example);
    compact(removed);
  }
}

void Ingest::refuse_quota(const std::string& path, const FileKey& key, std::uint32_t uid, const char* which,
                          const std::string& stream, std::uint64_t now) {
  auto [it, first] = quota_waiting_.try_emplace(path, QuotaWait{key, 0, 0, false, Claim{}});
  QuotaWait& w = it->second;
  if (first || w.key.dev != key.dev || w.key.ino != key.ino) {
    const std::string uid_text = std::to_string(uid);
    const std::string label =
        quota_refused_.count(uid_text) || quota_refused_.size() < core::kMaxUidLabels ? uid_text : "other";
    quota_refused_[label]++;
    w.backoff = 0;
  }
  // Logged once per uid (a uid with 10,000 files must not write 10,000 lines), then at debug.
  const bool warn = !quota_logged_[uid];
  quota_logged_[uid] = true;
  const std::string text = "segment " + path + " of stream '" + stream + "' refused: uid " + std::to_string(uid) +
                           " has reached ingest." +
                           (std::string(which) == "segments"
                                ? "max_segments_per_uid (" + std::to_string(config_.max_segments_per_uid)
                                : "max_streams_per_uid (" + std::to_string(config_.max_streams_per_uid)) +
                           "); retried when its producers end";
  if (warn) core::log::warn("{} (further refusals of uid {} are logged at debug level)", text, uid);
  else core::log::debug("{}", text);
  w.key = key;
  // 1 s doubling to 10 s: a slot frees when one of the uid's producers is retired.
  w.backoff = std::min<std::uint64_t>(w.backoff == 0 ? 1'000'000'000ull : w.backoff * 2, kWaitRetryMaxNs);
  w.retry_at = now + w.backoff;
}

// The directories the tracer may watch for this producer: under ingest.artifact_dirs, and
// readable by the producer's own credentials (so nobody learns names in a directory they could
// not list themselves).
std::vector<std::string> Ingest::watchable_artifacts(const SegmentIdentity& id,
                                                     const ProcessCredentials& who) {
  std::vector<std::string> out;
  for (const auto& path : id.artifacts) {
    std::string dir = path;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) dir = path.substr(0, path.rfind('/'));
    if (dir.empty()) dir = "/";
    char resolved[PATH_MAX];
    bool ok = ::realpath(dir.c_str(), resolved) != nullptr;
    bool under = false;
    if (ok) {
      for (const auto& allowed : config_.artifact_dirs) {
        char allowed_resolved[PATH_MAX];
        if (::realpath(allowed.c_str(), allowed_resolved) && path_is_under(resolved, allowed_resolved)) {
          under = true;
        }
      }
    }
    ok = ok && under && credentials_can_read_dir(who, resolved);
    if (!ok) {
      artifacts_refused_++;
      core::log::warn("artifact {} of stream '{}' (pid {}) not watched: {}", path, id.stream,
                   id.producer.pid,
                   !under ? "not under ingest.artifact_dirs" : "the producer's uid cannot read it");
      continue;
    }
    // The directory is what gets watched: hand the resolved directory on.
    out.emplace_back(resolved);
  }
  return out;
}

bool Ingest::arm_watch() {
  if (watch_ >= 0) return true;
  if (dir_fd_ < 0) dir_fd_ = ::open(config_.shm_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (inotify_fd_ < 0) inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ < 0) return false;
  // Creations and renames in (a new ring), removals and renames out (forget it), and writes
  // through write(2) or a mode change (a refused file may have changed). Writes through a
  // mapping raise no event: a ring being set up is retried as pending, and the full rescan
  // catches the rest.
  watch_ = ::inotify_add_watch(inotify_fd_, config_.shm_dir.c_str(),
                               IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_CLOSE_WRITE |
                                   IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK);
  if (watch_ < 0) {
    if (!watch_warned_) {
      core::log::warn("cannot watch {} with inotify ({}): listing it every {} ms instead", config_.shm_dir,
                   std::strerror(errno), config_.scan_interval.count() / 1000000);
    }
    watch_warned_ = true;
    return false;
  }
  need_full_scan_ = true;  // what was created before the watch existed
  return true;
}

void Ingest::drain_events(std::vector<std::string>& names, bool& full) {
  if (inotify_fd_ < 0 || watch_ < 0) return;
  alignas(struct inotify_event) char buf[16384];
  for (;;) {
    const ssize_t n = ::read(inotify_fd_, buf, sizeof buf);
    if (n <= 0) break;
    for (ssize_t off = 0; off < n;) {
      const auto* ev = reinterpret_cast<const struct inotify_event*>(buf + off);
      off += static_cast<ssize_t>(sizeof(struct inotify_event) + ev->len);
      if (ev->mask & IN_Q_OVERFLOW) {
        full = true;  // events were lost: list the directory
        continue;
      }
      if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT)) {
        // The directory itself went away or moved: watch it again, by name, next scan.
        if (watch_ >= 0) ::inotify_rm_watch(inotify_fd_, watch_);
        watch_ = -1;
        if (dir_fd_ >= 0) ::close(dir_fd_);
        dir_fd_ = -1;
        full = true;
        continue;
      }
      if (ev->len == 0 || !naming::is_segment_file_name(config_.ns, ev->name)) continue;
      if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) forget_file(config_.shm_dir + "/" + ev->name);
      else names.emplace_back(ev->name);
    }
  }
}

void Ingest::forget_file(const std::string& path) {
  const std::size_t freed = rejected_files_.erase(path) + pending_since_.erase(path) +
                            unverified_.erase(path) + quota_waiting_.erase(path);
  if (freed > 0) compact(freed);
}

void Ingest::compact(std::size_t freed) {
  // An emptied hash table keeps its buckets: give them back.
  auto shrink = [](auto& m) {
    if (m.empty() && m.bucket_count() > 64) std::decay_t<decltype(m)>().swap(m);
  };
  shrink(rejected_files_);
  shrink(pending_since_);
  shrink(unverified_);
  shrink(quota_waiting_);
  shrink(by_path_);
  // glibc keeps freed heap for reuse; after many entries or segments went, give it back.
  freed_since_trim_ += freed;
  if (freed_since_trim_ >= 256) {
    freed_since_trim_ = 0;
    ::malloc_trim(0);
  }
}

void Ingest::list_directory(std::vector<std::string>& names) {
  DIR* dir = ::opendir(config_.shm_dir.c_str());
  if (!dir) {
    if (!list_warned_) core::log::warn("cannot list {}: {}", config_.shm_dir, std::strerror(errno));
    list_warned_ = true;
    return;
  }
  std::unordered_set<std::string> present;
  while (dirent* de = ::readdir(dir)) {
    if (!naming::is_segment_file_name(config_.ns, de->d_name)) continue;
    std::string path = config_.shm_dir + "/" + de->d_name;
    if (!by_path_.count(path)) names.emplace_back(de->d_name);  // attached ones are known
    present.insert(std::move(path));
  }
  ::closedir(dir);
  std::size_t freed = 0;
  auto prune = [&](auto& m) {
    for (auto it = m.begin(); it != m.end();) {
      if (!present.count(it->first)) {
        it = m.erase(it);
        ++freed;
      } else {
        ++it;
      }
    }
  };
  prune(rejected_files_);
  prune(pending_since_);
  prune(unverified_);
  prune(quota_waiting_);
  compact(freed);
}

void Ingest::scan(std::uint64_t now) {
  touch_presence(now);
  const bool watching = arm_watch();
  std::vector<std::string> names;
  bool full = need_full_scan_ || !watching || now < last_full_scan_ ||
              now - last_full_scan_ >= static_cast<std::uint64_t>(config_.rescan_interval.count());
  drain_events(names, full);
  if (full) {
    names.clear();
    list_directory(names);
    last_full_scan_ = now;
    need_full_scan_ = false;
    full_scans_++;
  }
  // Files waiting for something that may change without an event: rings being set up (writes
  // through a mapping raise none), transient trust failures and quota waits that are due.
  const std::size_t prefix = config_.shm_dir.size() + 1;
  for (const auto& [path, since] : pending_since_) names.push_back(path.substr(prefix));
  for (const auto& [path, u] : unverified_) {
    if (trust_failure_transient(u.cause) && now >= u.retry_at) names.push_back(path.substr(prefix));
  }
  for (const auto& [path, w] : quota_waiting_) {
    if (now >= w.retry_at) names.push_back(path.substr(prefix));
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  for (const auto& n : names) consider(n, now);
  if (!names.empty()) publish_soon_ = true;
  reap_refused(now);
  for (auto& seg : segments_) refresh_segment(*seg, *seg->stream, now);
  retire_segments(now);
  ticks_cache_.clear();
  maps_cache_.clear();
  if (!first_scan_done_) saved_positions_.clear();  // of segments that are no longer there
  first_scan_done_ = true;
}

void Ingest::consider(const std::string& name, std::uint64_t now) {
  const std::string path = config_.shm_dir + "/" + name;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    forget_file(path);
    return;
  }
  if (auto known = by_path_.find(path); known != by_path_.end() &&
                                        known->second->dev == static_cast<std::uint64_t>(st.st_dev) &&
                                        known->second->ino == static_cast<std::uint64_t>(st.st_ino)) {
    return;
  }
  const FileKey key{static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino),
                    static_cast<std::uint64_t>(st.st_size),
                    static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000ll + st.st_mtim.tv_nsec};
  auto rej = rejected_files_.find(path);
  if (rej != rejected_files_.end()) {
    if (rej->second == key) return;  // unchanged since we refused it
    rejected_files_.erase(rej);
  }
  if (auto q = quota_waiting_.find(path); q != quota_waiting_.end()) {
    // Same inode (a live producer changes size and mtime as it writes): wait for the retry.
    const bool same = q->second.key.dev == key.dev && q->second.key.ino == key.ino;
    if (same && now < q->second.retry_at) return;
  }
  if (auto un = unverified_.find(path); un != unverified_.end()) {
    const bool retry = trust_failure_transient(un->second.cause) && now >= un->second.retry_at;
    if (un->second.key == key && !retry) return;
  }
  RejectReason reason{};
  std::string detail;
  const std::uint64_t opened_ns = monotonic_ns();  // a maps parse read after this is fresh enough
  auto reader = SegmentReader::open(path, config_.reader, reason, detail);
  if (!reader) {
    if (unverified_.erase(path) + quota_waiting_.erase(path) > 0) compact(1);  // it changed
    // A producer creating its segment right now: give it pending_grace before refusing.
    const bool maybe_creating = reason == RejectReason::too_small ||
                                reason == RejectReason::bad_magic ||
                                reason == RejectReason::bad_layout;
    auto [pit, inserted] = pending_since_.try_emplace(path, now);
    if (maybe_creating && now - pit->second < static_cast<std::uint64_t>(config_.pending_grace.count())) {
      return;
    }
    pending_since_.erase(pit);
    rejected_files_[path] = key;
    rejected_total_[std::string(reject_reason_name(reason))]++;
    core::log::warn("segment {} refused ({}): {}", path, reject_reason_name(reason), detail);
    return;
  }
  // What the header claims, before anything is verified or forgotten: kept with a refusal (to
  // remove the file once that producer is dead) and as the key of a saved read position.
  Claim claim;
  claim.producer = reader->identity().producer;
  claim.pid_ns = reader->identity().pid_ns_inode;
  claim.header_uid = reader->identity().uid;
  claim.file_uid = reader->file().uid;
  const PositionKey position_key{key.dev, key.ino, claim.producer.pid, claim.producer.start_ticks,
                                 reader->identity().created_unix_ns};
  auto keep_claim = [&claim](Claim& c) {
    if (c.producer.pid != claim.producer.pid || c.producer.start_ticks != claim.producer.start_ticks ||
        c.file_uid != claim.file_uid) {
      c = claim;
    }
  };
  // The kernel vouches for the producer the header names, or the segment is not read.
  Verification trust;
  bool history = false;
  if (config_.verify_producers) {
    trust = verify_producer(reader->file(), reader->identity(), pid_ns_inode_, config_.proc_dir,
                            &maps_cache_, opened_ns);
    // A ring whose producer already ended (a short batch job, a producer that closed its
    // stream or was killed before the next scan) cannot be verified any more, but its records
    // are the file owner's: read them as that uid's history, with no process identity, so
    // nothing is ever signalled, traced or watched for it, then remove it like any ended
    // producer's (docs/security.md, "history"). Refusing it would leave its rows uncounted.
    const auto state = reader->state();
    const bool ended = (state && *state == format::SegmentState::closed) ||
                       trust.failure == TrustFailure::process_gone;
    history = !trust.ok() && ended && reader->file().uid == reader->identity().uid;
    if (history) {
      core::log::info("segment {} read as history of uid {}: producer ended, not verifiable ({}: {})",
                   path, reader->file().uid, trust_failure_name(trust.failure), trust.detail);
      reader->forget_producer();
      trust = Verification{};
      trust.credentials.uid = reader->file().uid;
    }
    if (auto w = quota_waiting_.find(path); !trust.ok() && trust.failure == TrustFailure::process_gone &&
                                            w != quota_waiting_.end() && w->second.key.ino == key.ino &&
                                            w->second.key.dev == key.dev) {
      // Verified while it waited for a slot; its producer was killed since: nobody will ever
      // read it.
      remove_waiting(path, key.dev, key.ino, "producer_dead");
      return;
    }
    if (!trust.ok()) {
      // A producer maps its file before it writes the magic, so not_mapped is not expected
      // from a live SDK producer; a half-set-up one still gets pending_grace.
      auto [pit, inserted] = pending_since_.try_emplace(path, now);
      if (trust_failure_transient(trust.failure) && !unverified_.count(path) &&
          now - pit->second < static_cast<std::uint64_t>(config_.pending_grace.count())) {
        return;
      }
      pending_since_.erase(pit);
      refuse_unverified(path, key, trust.failure, trust.detail, reader->identity(), now);
      keep_claim(unverified_[path].claim);
      return;
    }
  } else {
    // INSECURE mode: still signal through a pidfd of the process that has the header's start
    // time, so a reused pid is never signalled.
    const auto& p = reader->identity().producer;
    if (p.pid != 0) take_pidfd(p.pid, p.start_ticks, config_.proc_dir, trust);
    UniqueFd pidfd = std::move(trust.pidfd);  // none if that process is gone or was reused
    trust = Verification{};                   // accepted whatever the pidfd step said
    trust.pidfd = std::move(pidfd);
    trust.credentials.uid = reader->file().uid;
    trust.credentials.gid = static_cast<std::uint32_t>(-1);
  }
  pending_since_.erase(path);
  const std::uint32_t uid = reader->file().uid;
  if (!stream_accepts(reader->identity().stream, uid)) {
    const std::string label =
        stream_owner_refused_.count(std::to_string(uid)) || stream_owner_refused_.size() < core::kMaxUidLabels
            ? std::to_string(uid)
            : "other";
    const bool counted = refuse_unverified(
        path, key, TrustFailure::stream_owner,
        "stream '" + reader->identity().stream + "' belongs to another uid, segment uid " +
            std::to_string(uid),
        reader->identity(), now);
    if (counted) stream_owner_refused_[label]++;
    keep_claim(unverified_[path].claim);
    return;
  }
  if (const char* which = quota_exceeded(uid, reader->identity().stream)) {
    // Its producer ended while it waited (closed or killed) and still over the quota: it will
    // never be read.
    if (history && quota_waiting_.count(path)) {
      const auto st = reader->state();
      const bool closed = st && *st == format::SegmentState::closed;
      remove_waiting(path, key.dev, key.ino, closed ? "closed" : "producer_dead");
    } else {
      refuse_quota(path, key, uid, which, reader->identity().stream, now);
      keep_claim(quota_waiting_[path].claim);
    }
    return;
  }
  if (quota_waiting_.erase(path) > 0) core::log::info("segment {} of uid {} attached: within its quota now", path, uid);
  if (unverified_.erase(path) > 0) {
    core::log::info("segment {} verified on retry", path);
  }
  if (!history) reader->set_artifacts(watchable_artifacts(reader->identity(), trust.credentials));
  MergedStream* st_ptr = stream_for(reader->identity(), uid, now);
  if (!st_ptr && history && quota_waiting_.count(path)) {
    const auto st_now = reader->state();
    const bool closed = st_now && *st_now == format::SegmentState::closed;
    remove_waiting(path, key.dev, key.ino, closed ? "closed" : "producer_dead");
    return;
  }
  if (!st_ptr) {
    // Over the stream cap: waits like a quota refusal (retried with backoff, removed once its
    // producer is gone), so that an ignored stream's files do not stay forever.
    auto [wit, first] = quota_waiting_.try_emplace(path, QuotaWait{key, 0, 0, true, Claim{}});
    if (first) {
      streams_cut_++;
      core::log::warn("segment {} of stream '{}' ignored: ingest.max_streams ({}) reached", path,
                   reader->identity().stream, config_.max_streams);
    }
    wit->second.key = key;
    wit->second.over_max_streams = true;
    wit->second.backoff = std::min<std::uint64_t>(
        wit->second.backoff == 0 ? 1'000'000'000ull : wit->second.backoff * 2, kWaitRetryMaxNs);
    wit->second.retry_at = now + wit->second.backoff;
    keep_claim(wit->second.claim);
    return;
  }
  auto seg = std::make_unique<Segment>();
  seg->path = path;
  seg->dev = st.st_dev;
  seg->ino = st.st_ino;
  seg->stream = st_ptr;
  seg->last_new_data = now;
  seg->rate_base_time = now;
  seg->pidfd = std::move(trust.pidfd);
  seg->credentials = std::move(trust.credentials);
  // Found at the first scan, closed, its producer gone: a previous run's leftovers. Read and
  // counted (nothing is lost), but never analyzed: pinned as a reference, yesterday's data
  // would make today's healthy run look drifted (issue 11's demo-twice report).
  seg->backlog = history && !first_scan_done_;
  if (seg->backlog) {
    core::log::info("segment {} of stream '{}' is backlog: its producer ended before this agent "
                 "started; its records are counted (mltap_stream_backlog_records_total) but "
                 "not analyzed, and never become the stream's reference",
                 path, reader->identity().stream);
  }
  const auto& id = reader->identity();
  core::log::info("producer pid {} ({}) of stream '{}' attached: {}", id.producer.pid,
               id.component, id.stream, path);
  if (st_ptr->pending_deaths > 0) {
    st_ptr->pending_deaths--;
    st_ptr->restarts_total++;
  }
  seg->reader = std::move(reader);
  seg->position_key = position_key;
  if (auto saved = saved_positions_.find(position_key); saved != saved_positions_.end()) {
    // The previous agent read this very ring up to here: resume, and take its counters as the
    // base, so that nothing it counted is counted again.
    if (seg->reader->restore_positions(saved->second.lanes)) {
      seg->rows_read = saved->second.rows_read;
      seg->rows_overwritten = saved->second.rows_overwritten;
      seg->counters = saved->second.counters;
      seg->rate_base_rows = seg->counters.rows_written;
      core::log::info("segment {}: resuming at the read position saved by the previous agent "
                   "({} rows read before)", path, seg->rows_read);
    } else {
      core::log::warn("segment {}: the saved read position does not fit the ring; reading it from "
                   "its start", path);
    }
    saved_positions_.erase(saved);
  }
  if (observer_ && !history) observer_->on_producer_attached(seg->reader->identity());
  by_path_[path] = seg.get();
  hot_.push_back(seg.get());
  state_dirty_ = true;
  segments_.push_back(std::move(seg));
}

// Producer counters and write rate; before every snapshot, so that a snapshot's counters and
// record counts are read together.
void Ingest::refresh_counters(Segment& seg, MergedStream& st, std::uint64_t now, bool force) {
  SegmentReader& r = *seg.reader;
  if (!force && seg.idle && now >= seg.last_refresh && now - seg.last_refresh < kIdleRefreshNs) return;
  seg.last_refresh = now;
  if (auto pc = r.producer_counters()) {
    auto add = [](std::uint64_t& total, std::uint64_t now_v, std::uint64_t old_v) {
      if (now_v > old_v) total += now_v - old_v;  // a counter going backwards is ignored
    };
    if (pc->rows_written != seg.counters.rows_written || pc->rows_bad_input != seg.counters.rows_bad_input ||
        pc->rows_too_large != seg.counters.rows_too_large || pc->rows_no_lane != seg.counters.rows_no_lane) {
      state_dirty_ = true;
    }
    add(st.writes_total, pc->rows_written, seg.counters.rows_written);
    add(st.sampled_out_total, pc->rows_sampled_out, seg.counters.rows_sampled_out);
    add(st.dropped[static_cast<std::size_t>(DropReason::too_large)], pc->rows_too_large, seg.counters.rows_too_large);
    add(st.dropped[static_cast<std::size_t>(DropReason::bad_input)], pc->rows_bad_input, seg.counters.rows_bad_input);
    add(st.dropped[static_cast<std::size_t>(DropReason::no_lane)], pc->rows_no_lane, seg.counters.rows_no_lane);
    auto keep = [](std::uint64_t a, std::uint64_t b) { return std::max(a, b); };
    seg.counters.rows_written = keep(pc->rows_written, seg.counters.rows_written);
    seg.counters.rows_sampled_out = keep(pc->rows_sampled_out, seg.counters.rows_sampled_out);
    seg.counters.rows_too_large = keep(pc->rows_too_large, seg.counters.rows_too_large);
    seg.counters.rows_bad_input = keep(pc->rows_bad_input, seg.counters.rows_bad_input);
    seg.counters.rows_no_lane = keep(pc->rows_no_lane, seg.counters.rows_no_lane);
    seg.counters.rows_committed = pc->rows_committed;
    seg.counters.lanes_used = pc->lanes_used;
    if (now - seg.rate_base_time >= 5'000'000'000ull) {
      const double dt = static_cast<double>(now - seg.rate_base_time) / 1e9;
      seg.write_rate = static_cast<double>(seg.counters.rows_written - seg.rate_base_rows) / dt;
      seg.rate_base_rows = seg.counters.rows_written;
      seg.rate_base_time = now;
    }
  }
}

// Liveness (pid + start time, or the closed state) and the heartbeat; once per scan.
void Ingest::refresh_segment(Segment& seg, MergedStream& st, std::uint64_t now) {
  SegmentReader& r = *seg.reader;
  const bool due = !seg.idle || now < seg.last_state || now - seg.last_state >= kIdleRefreshNs;
  if (due) seg.last_state = now;
  refresh_counters(seg, st, now);
  if (seg.state == ProducerState::alive || seg.state == ProducerState::unknown) {
    const auto& id = r.identity();
    // An idle ring's closed state is read every kIdleRefreshNs; its producer's liveness (no read
    // of the ring) at every scan.
    auto state = due ? r.state() : std::optional<format::SegmentState>(format::SegmentState::ready);
    if (state && *state == format::SegmentState::closed) {
      seg.state = ProducerState::closed;
      publish_soon_ = true;
      seg.gone_since = now;
      core::log::info("producer pid {} of stream '{}' closed its stream", id.producer.pid, id.stream);
      if (observer_) observer_->on_producer_gone(id, seg.state);
    } else if (!r.healthy()) {
      seg.state = ProducerState::dead;
      seg.gone_since = now;
      publish_soon_ = true;
    } else if (id.pid_ns_inode != 0 && id.pid_ns_inode == pid_ns_inode_) {
      // One /proc read per producer and scan, however many segments it has.
      auto [tit, fresh] = ticks_cache_.try_emplace(id.producer.pid);
      if (fresh) tit->second = naming::process_start_ticks(id.producer.pid, config_.proc_dir);
      const auto& ticks = tit->second;
      if (!ticks || *ticks != id.producer.start_ticks) {
        seg.state = ProducerState::dead;
        seg.gone_since = now;
        publish_soon_ = true;
        st.pending_deaths++;
        core::log::info("producer pid {} of stream '{}' is gone", id.producer.pid, id.stream);
        if (observer_) observer_->on_producer_gone(id, seg.state);
      } else {
        seg.state = ProducerState::alive;
      }
    } else {
      seg.state = ProducerState::unknown;  // another pid namespace: we cannot judge liveness
    }
  }
  // Every second; an idle ring's with its state, every kIdleRefreshNs (nothing reads it in a hurry).
  const bool beat = seg.idle ? due : now - last_heartbeat_ >= 1'000'000'000ull;
  if (beat && r.healthy()) r.heartbeat(now);
}

void Ingest::retire_segments(std::uint64_t now) {
  if (now - last_heartbeat_ >= 1'000'000'000ull) last_heartbeat_ = now;
  std::unordered_set<Segment*> retired;
  for (auto it = segments_.begin(); it != segments_.end();) {
    Segment& seg = **it;
    const bool gone = seg.state == ProducerState::dead || seg.state == ProducerState::closed;
    if (!gone) {
      ++it;
      continue;
    }
    const auto grace = seg.state == ProducerState::closed ? config_.closed_segment_grace
                                                          : config_.dead_producer_grace;
    // Drained: a poll after the last one that found records found nothing. The grace runs from
    // the death or from the last records, whichever is later: records read after the death was
    // seen (a ring attached after its producer ended, or written just before it was killed) are
    // no reason to keep the segment forever.
    const bool drained = seg.last_empty_poll > seg.last_new_data || !seg.reader->healthy();
    const std::uint64_t quiet_since = std::max(seg.gone_since, seg.last_new_data);
    if (!drained || now - quiet_since < static_cast<std::uint64_t>(grace.count())) {
      ++it;
      continue;
    }
    // Its producer's final counters: an idle ring's are otherwise read only every
    // kIdleRefreshNs, so a producer that wrote (sampled out, dropped) and died since would take
    // its last writes with it.
    refresh_counters(seg, *seg.stream, now, true);
    // Anything committed and never read is lost to the reader.
    const std::uint64_t unread = seg.reader->unread_committed_rows();
    seg.stream->dropped[static_cast<std::size_t>(DropReason::overwritten)] += unread;
    // The rows of a write the producer was killed in: its rows_written counted them (writes_total
    // has them) and nothing else will.
    if (seg.state == ProducerState::dead) {
      const std::uint64_t interrupted = seg.reader->interrupted_rows();
      seg.stream->dropped[static_cast<std::size_t>(DropReason::interrupted)] += interrupted;
      if (interrupted > 0) {
        core::log::info("producer pid {} of stream '{}' died inside a write: {} rows counted as interrupted",
                     seg.reader->identity().producer.pid, seg.stream->info.name, interrupted);
      }
    }
    const char* reason = seg.state == ProducerState::closed ? "closed" : "producer_dead";
    if (config_.remove_dead_segments && unlink_same_file(seg.path, seg.dev, seg.ino, -1)) {
      removed_total_[reason]++;
      core::log::info("removed segment {} ({})", seg.path, reason);
    }
    // Its uid has a free slot now: segments of that uid (and any over max_streams) waiting
    // for one are retried at the next scan.
    const std::uint32_t uid = seg.reader->file().uid;
    for (auto& [path, w] : quota_waiting_) {
      if (w.over_max_streams || w.claim.file_uid == uid) w.retry_at = 0;
    }
    retired.insert(&seg);
    if (auto bp = by_path_.find(seg.path); bp != by_path_.end() && bp->second == &seg) by_path_.erase(bp);
    it = segments_.erase(it);
  }
  if (!retired.empty()) {
    publish_soon_ = true;
    auto gone = [&](Segment* p) { return retired.count(p) > 0; };
    hot_.erase(std::remove_if(hot_.begin(), hot_.end(), gone), hot_.end());
    idle_.erase(std::remove_if(idle_.begin(), idle_.end(), gone), idle_.end());
    state_dirty_ = true;
    compact(retired.size());
  }
}

// Segments with recent records are polled every loop; idle ones (no record for kIdleAfterNs) in
// slices, so that each is looked at about every idle_poll_interval: 5,000 idle rings cost 10,000
// word reads a second, not a million. One that has new records is hot again at once.
void Ingest::poll_all(std::uint64_t now, bool& more, bool everything) {
  polls_++;
  // A mapping that faulted (file truncated) is counted once, whichever read found it: a poll,
  // or the producer counters read for a snapshot between two paced polls.
  const auto note_fault = [&](Segment& seg) {
    if (seg.reader->healthy() || seg.fault_counted) return;
    seg.fault_counted = true;
    rejected_total_[std::string(reject_reason_name(RejectReason::truncated))]++;
    core::log::warn("segment {} of stream '{}' faulted (file truncated?); closing it", seg.path,
                    seg.stream->info.name);
  };
  auto poll_one = [&](Segment& seg) -> bool {
    if (!seg.reader->healthy()) {
      note_fault(seg);
      return false;
    }
    // Time since its previous poll (0 for the first: what it reads then is its whole past).
    const std::uint64_t since = seg.last_poll > 0 && now > seg.last_poll ? now - seg.last_poll : 0;
    seg.last_poll = now;
    Visitor v(*this, seg);
    const PollCounts c = seg.reader->poll(v);
    if (c.bytes > 0 && since > 0) {
      seg.quarter_fill_ns = kReadBacklogShare * static_cast<double>(seg.reader->identity().data_bytes) *
                            static_cast<double>(since) / static_cast<double>(c.bytes);
    }
    MergedStream& st = *seg.stream;
    bool invalid = false;
    for (std::size_t i = 0; i < kInvalidReasonCount; ++i) {
      st.invalid[i] += c.records_invalid[i];
      invalid = invalid || c.records_invalid[i] > 0;
    }
    const bool news = c.records > 0 || c.rows_overwritten > 0 || invalid;
    if (news) {
      seg.last_new_data = now;
      state_dirty_ = true;
    } else if (!c.more) {
      seg.last_empty_poll = now;
    }
    seg.rows_overwritten += c.rows_overwritten;
    st.dropped[static_cast<std::size_t>(DropReason::overwritten)] += c.rows_overwritten;
    if (c.more) more = true;
    note_fault(seg);
    return news;
  };
  const auto delay = static_cast<std::uint64_t>(config_.read_delay.count());
  // Whether a hot segment is read now (IngestConfig::read_delay). Its backlog is looked at (a
  // load of the producer's line per lane) about four times per quarter ring at its last rate,
  // every poll_interval at most and every read_delay / 4 at least: looking at 1,000 slow rings
  // every 5 ms cost more than reading them.
  const auto poll_ns = static_cast<double>(config_.poll_interval.count());
  const auto due = [&](Segment& seg) {
    if (everything || delay == 0 || !seg.reader->healthy() || now < seg.last_poll ||
        now - seg.last_poll >= delay) {
      return true;
    }
    if (now < seg.next_backlog_check) return false;
    if (seg.reader->backlog_reached(kReadBacklogShare)) return true;
    const double gap = std::clamp(seg.quarter_fill_ns / 4, poll_ns, std::max(poll_ns, static_cast<double>(delay) / 4));
    seg.next_backlog_check = now + static_cast<std::uint64_t>(gap);
    return false;
  };
  for (std::size_t i = 0; i < hot_.size();) {
    Segment& seg = *hot_[i];
    if (!due(seg)) {
      ++i;
      continue;
    }
    const bool news = poll_one(seg);
    if (!news && now > seg.last_new_data && now - seg.last_new_data >= kIdleAfterNs) {
      seg.idle = true;
      idle_.push_back(&seg);
      hot_[i] = hot_.back();
      hot_.pop_back();
      continue;
    }
    ++i;
  }
  if (idle_.empty()) {
    idle_credit_ = 0;
    last_idle_poll_ = now;
    return;
  }
  std::size_t budget = idle_.size();
  if (!everything) {
    const double elapsed = now > last_idle_poll_ ? static_cast<double>(now - last_idle_poll_) : 0.0;
    idle_credit_ += static_cast<double>(idle_.size()) * elapsed /
                    static_cast<double>(std::max<std::int64_t>(1, config_.idle_poll_interval.count()));
    idle_credit_ = std::min(idle_credit_, static_cast<double>(idle_.size()));
    budget = static_cast<std::size_t>(idle_credit_);
    idle_credit_ -= static_cast<double>(budget);
  }
  last_idle_poll_ = now;
  for (std::size_t n = 0; n < budget && !idle_.empty(); ++n) {
    if (idle_cursor_ >= idle_.size()) idle_cursor_ = 0;
    Segment& seg = *idle_[idle_cursor_];
    if (poll_one(seg)) {
      seg.idle = false;
      hot_.push_back(&seg);
      idle_[idle_cursor_] = idle_.back();
      idle_.pop_back();
    } else {
      ++idle_cursor_;
    }
  }
}

void Ingest::publish(std::uint64_t now) {
  for (auto& seg : segments_) refresh_counters(*seg, *seg->stream, now);
  auto snap = std::make_shared<IngestSnapshot>();
  snap->taken_unix_ns = now;
  snap->rejected_total = rejected_total_;
  snap->removed_total = removed_total_;
  snap->streams_cut = streams_cut_;
  snap->features_cut = features_cut_;
  snap->sigbus_caught = sigbus_caught();
  snap->polls = polls_;
  snap->segments_pending = pending_since_.size();
  std::uint64_t ignored_now = 0;
  for (const auto& [path, w] : quota_waiting_) ignored_now += w.over_max_streams ? 1 : 0;
  snap->segments_rejected = rejected_files_.size() + unverified_.size() + quota_waiting_.size() - ignored_now;
  snap->unverified_total = unverified_total_;
  snap->stream_owner_refused = stream_owner_refused_;
  snap->quota_refused = quota_refused_;
  snap->presence_squatted = presence_fd_ < 0 && presence_squatter_ >= 0 &&
                            presence_squatter_ != std::numeric_limits<std::int64_t>::max();
  snap->artifacts_refused = artifacts_refused_;
  snap->segments_ignored = ignored_now;
  snap->streams.reserve(streams_.size());
  for (auto& [name, stp] : streams_) {
    MergedStream& st = *stp;
    if (now - st.rate_base_time >= 5'000'000'000ull) {
      st.record_rate = static_cast<double>(st.records_total - st.rate_base_records) /
                       (static_cast<double>(now - st.rate_base_time) / 1e9);
      st.rate_base_records = st.records_total;
      st.rate_base_time = now;
    }
    StreamSnapshot s;
    s.features.reserve(st.stats.width());
    s.info = st.info;
    static_cast<core::StreamTotals&>(s) = st;
    s.record_rate = st.record_rate;
    s.features_cut = st.features_cut;
    for (std::size_t f = 0; f < st.stats.width(); ++f) {
      FeatureSnapshot fs;
      fs.name = f < st.info.feature_names.size() ? st.info.feature_names[f] : "f" + std::to_string(f);
      const auto& t = st.stats.totals(f);
      fs.values_total = t.values;
      fs.nan_total = t.nan;
      fs.inf_total = t.inf;
      const auto w = st.stats.window(f);
      fs.window_count = w.count;
      fs.mean = w.mean;
      fs.variance = w.variance;
      fs.min = w.min;
      fs.max = w.max;
      s.features.push_back(std::move(fs));
    }
    snap->streams.push_back(std::move(s));
  }
  std::unordered_map<const MergedStream*, std::size_t> position;  // stream -> index in snap
  {
    std::size_t i = 0;
    for (auto& [name, stp] : streams_) position.emplace(stp.get(), i++);
  }
  for (auto& segp : segments_) {
    Segment& seg = *segp;
    const bool gone = seg.state == ProducerState::dead || seg.state == ProducerState::closed;
    (gone ? snap->segments_draining : snap->segments_active)++;
    const auto pos = position.find(seg.stream);
    if (pos == position.end()) continue;
    auto it = snap->streams.begin() + static_cast<std::ptrdiff_t>(pos->second);
    const auto& id = seg.reader->identity();
    ProducerSnapshot p;
    p.id = id.producer;
    p.component = id.component;
    p.sdk = id.sdk;
    p.uid = id.uid;
    p.state = seg.state;
    p.segment = seg.path;
    p.lanes_used = seg.counters.lanes_used;
    p.rows_written = seg.counters.rows_written;
    p.rows_read = seg.rows_read;
    p.rows_dropped = seg.rows_overwritten + seg.counters.rows_too_large + seg.counters.rows_no_lane +
                     seg.counters.rows_bad_input;
    p.rows_sampled_out = seg.counters.rows_sampled_out;
    p.write_rate = seg.write_rate;
    p.created_unix_ns = id.created_unix_ns;
    p.last_seen_unix_ns = seg.last_new_data;
    if (!gone) it->live_producers++;
    it->producers.push_back(std::move(p));
  }
  {
    std::lock_guard<std::mutex> lock(snapshot_mutex_);
    snapshot_ = std::move(snap);
  }
  last_publish_ = now;
  publish_soon_ = false;
}

std::shared_ptr<const IngestSnapshot> Ingest::snapshot() const {
  std::lock_guard<std::mutex> lock(snapshot_mutex_);
  return snapshot_;
}

std::shared_ptr<const IngestSnapshot> Ingest::fresh_snapshot(std::chrono::milliseconds timeout) {
  if (!running_.load()) {
    return snapshot();
  }
  const std::uint64_t mine = snapshot_requested_.fetch_add(1, std::memory_order_acq_rel) + 1;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (snapshot_answered_.load(std::memory_order_acquire) >= mine) break;
    std::this_thread::sleep_for(2ms);
  }
  return snapshot();
}

void Ingest::run_commands() {
  std::deque<std::function<void()>> todo;
  {
    std::lock_guard<std::mutex> lock(command_mutex_);
    todo.swap(commands_);
  }
  for (auto& fn : todo) fn();
}

bool Ingest::execute(std::function<void()> fn, std::chrono::milliseconds timeout) const {
  if (!running_.load()) {
    fn();
    return true;
  }
  auto done = std::make_shared<std::promise<void>>();
  auto fut = done->get_future();
  {
    std::lock_guard<std::mutex> lock(command_mutex_);
    commands_.push_back([fn = std::move(fn), done] {
      fn();
      done->set_value();
    });
  }
  return fut.wait_for(timeout) == std::future_status::ready;
}

std::vector<ProducerId> Ingest::producers(const std::string& stream) const {
  std::vector<ProducerId> out;
  auto snap = snapshot();
  for (const auto& s : snap->streams) {
    if (s.info.name != stream) continue;
    for (const auto& p : s.producers) {
      if (p.state == ProducerState::alive || p.state == ProducerState::unknown) out.push_back(p.id);
    }
  }
  return out;
}

core::SignalReport Ingest::signal_producers(const std::string& stream, int signal) {
  auto report = std::make_shared<core::SignalReport>();
  const bool ran = execute(
      [this, stream, signal, report] {
        const auto self = static_cast<std::uint32_t>(::getpid());
        std::string detail;
        for (auto& seg : segments_) {
          if (seg->stream->info.name != stream || seg->state == ProducerState::dead ||
              seg->state == ProducerState::closed) {
            continue;
          }
          const auto pid = seg->reader->identity().producer.pid;
          const std::string who = "pid " + std::to_string(pid);
          if (pid <= 1 || pid == self) {
            report->refused++;
            detail += who + " refused; ";
          } else if (!seg->pidfd.valid()) {
            report->refused++;
            detail += who + " has no pidfd (not verified); ";
          } else if (core::sys::pidfd_send_signal(seg->pidfd.get(), signal, nullptr, 0) == 0) {
            report->signalled++;
            detail += who + " signalled; ";
          } else if (errno == ESRCH) {
            report->gone++;
            detail += who + " exited; ";
          } else {
            report->failed++;
            detail += who + ": " + std::strerror(errno) + "; ";
          }
        }
        if (detail.size() >= 2) detail.resize(detail.size() - 2);
        report->detail = std::move(detail);
      },
      2000ms);
  if (!ran) {
    core::SignalReport r;
    r.failed = 1;
    r.detail = "ingest thread did not answer within 2 s";
    return r;
  }
  return *report;
}

core::ControlResult Ingest::set_flag(const std::string& stream, const std::string& flag,
                                      std::uint32_t value) {
  auto result = std::make_shared<core::ControlResult>();
  if (!naming::valid_label_text(flag, format::kFlagNameMax - 1)) {
    result->error = "invalid flag name '" + flag + "'";
    return *result;
  }
  const bool ran = execute(
      [this, stream, flag, value, result] {
        for (auto& seg : segments_) {
          if (seg->stream->info.name != stream || seg->state == ProducerState::dead ||
              seg->state == ProducerState::closed) {
            continue;
          }
          if (seg->reader->set_flag(flag, value)) result->producers_affected++;
          else result->error = "no free flag slot or segment faulted: " + seg->path;
        }
      },
      2000ms);
  if (!ran) return {false, "ingest thread did not answer within 2 s", 0};
  if (result->producers_affected == 0 && result->error.empty()) {
    result->error = "stream '" + stream + "' has no live producer";
  }
  result->ok = result->producers_affected > 0;
  return *result;
}

core::ControlResult Ingest::boost_sampling(const std::string& stream, std::uint32_t permille,
                                            std::uint64_t until_unix_ns) {
  auto result = std::make_shared<core::ControlResult>();
  if (permille > 1000) return {false, "permille must be 0..1000", 0};
  const bool ran = execute(
      [this, stream, permille, until_unix_ns, result] {
        for (auto& seg : segments_) {
          if (seg->stream->info.name != stream || seg->state == ProducerState::dead ||
              seg->state == ProducerState::closed) {
            continue;
          }
          if (seg->reader->boost_sampling(permille, until_unix_ns)) result->producers_affected++;
        }
      },
      2000ms);
  if (!ran) return {false, "ingest thread did not answer within 2 s", 0};
  result->ok = result->producers_affected > 0;
  if (!result->ok) result->error = "stream '" + stream + "' has no live producer";
  return *result;
}

std::vector<core::RetainedRecord> Ingest::recent_records(const std::string& stream,
                                                          std::size_t max_records,
                                                          std::size_t max_bytes) const {
  auto out = std::make_shared<std::vector<core::RetainedRecord>>();
  auto* self = const_cast<Ingest*>(this);
  const bool ran = execute(
      [self, stream, max_records, max_bytes, out] {
        for (auto& seg : self->segments_) {
          if (seg->stream->info.name != stream) continue;
          for (auto& rc : seg->reader->copy_recent(max_records, max_bytes)) {
            core::RetainedRecord r;
            r.producer = seg->reader->identity().producer;
            r.seq = rc.seq;
            r.timestamp_ns = rc.timestamp_ns;
            r.dtype = std::string(format::dtype_name(rc.dtype));
            r.row_shape = std::move(rc.row_shape);
            r.rows = rc.rows;
            r.trace_ids = std::move(rc.trace_ids);
            r.payload = std::move(rc.payload);
            out->push_back(std::move(r));
          }
        }
        std::sort(out->begin(), out->end(), [](const auto& a, const auto& b) {
          return a.timestamp_ns < b.timestamp_ns;
        });
        // Keep the newest within the limits.
        std::size_t bytes = 0, keep = 0;
        for (auto it = out->rbegin(); it != out->rend() && keep < max_records; ++it) {
          if (bytes + it->payload.size() > max_bytes) break;
          bytes += it->payload.size();
          ++keep;
        }
        out->erase(out->begin(), out->end() - static_cast<std::ptrdiff_t>(keep));
      },
      5000ms);
  if (!ran) return {};  // the command may still run later; never read `out` concurrently
  return std::move(*out);
}

// ---------------------------------------------------------------------------------------------
// Read positions and stream counters in the state directory. Version 1 document "ingest.positions":
// {"streams": [{"name", "owner_uid", "records", "writes", "sampled_out", "dropped": [4],
//   "invalid": [6], "schema_mismatch", "backlog", "restarts", "last_record_unix_ns"}],
//  "segments": [{"dev", "ino", "pid", "start_ticks", "created_unix_ns",
//   "lanes": [[next_seq, rows_accounted]...], "rows_read", "rows_overwritten",
//   "counters": [rows_written, sampled_out, committed, too_large, bad_input, no_lane]}]}
// Both are taken on the ingest thread at one instant, so positions and counters agree: after a
// restart the records past the positions are read (and counted) exactly once.

namespace {
constexpr const char* kPositionsDoc = "ingest.positions";

// The document is written directly rather than through nlohmann::json: at 1,000 streams the tree
// (a std::map per object) cost ~6% of the ingest thread every checkpoint_interval
// (bench/detectors/stream_scale.py). restore() parses it with nlohmann::json
// (tests/ring/discovery_test.cpp, ReadPositions: written, restored, resumed).
class DocWriter {
 public:
  explicit DocWriter(std::string& out) : out_(out) {}
  DocWriter& raw(std::string_view s) {
    out_.append(s);
    return *this;
  }
  DocWriter& num(std::uint64_t v) {
    char buf[24];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    out_.append(buf, r.ptr);
    return *this;
  }
  // Stream names are checked (naming::valid_stream_name) but escaped anyway, the JSON way.
  DocWriter& str(std::string_view s) {
    out_.push_back('"');
    for (const char ch : s) {
      const auto c = static_cast<unsigned char>(ch);
      if (c == '"' || c == '\\') {
        out_.push_back('\\');
        out_.push_back(ch);
      } else if (c < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out_.append(buf);
      } else {
        out_.push_back(ch);
      }
    }
    out_.push_back('"');
    return *this;
  }
  template <std::size_t N>
  DocWriter& nums(const std::array<std::uint64_t, N>& a) {
    out_.push_back('[');
    for (std::size_t i = 0; i < N; ++i) {
      if (i) out_.push_back(',');
      num(a[i]);
    }
    out_.push_back(']');
    return *this;
  }

 private:
  std::string& out_;
};

void totals_json(DocWriter& w, const std::string& name, std::uint32_t owner, const core::StreamTotals& t) {
  w.raw("{\"name\":").str(name);
  w.raw(",\"owner_uid\":").num(owner);
  w.raw(",\"records\":").num(t.records_total);
  w.raw(",\"writes\":").num(t.writes_total);
  w.raw(",\"sampled_out\":").num(t.sampled_out_total);
  w.raw(",\"dropped\":").nums(t.dropped);
  w.raw(",\"invalid\":").nums(t.invalid);
  w.raw(",\"schema_mismatch\":").num(t.schema_mismatch_total);
  w.raw(",\"backlog\":").num(t.backlog_total);
  w.raw(",\"restarts\":").num(t.restarts_total);
  w.raw(",\"last_record_unix_ns\":").num(t.last_record_unix_ns).raw("}");
}
}  // namespace

std::vector<core::StateDocument> Ingest::checkpoint() {
  if (!state_dirty_) return {};
  state_dirty_ = false;
  std::string doc;
  doc.reserve(last_checkpoint_bytes_ + last_checkpoint_bytes_ / 8 + 64);
  DocWriter w(doc);
  w.raw("{\"streams\":[");
  bool first = true;
  for (const auto& [name, st] : streams_) {
    if (!std::exchange(first, false)) w.raw(",");
    totals_json(w, name, st->owner_uid, *st);
  }
  // Streams restored but not seen again yet keep their counters for a later restart too.
  for (const auto& [name, saved] : saved_totals_) {
    if (!std::exchange(first, false)) w.raw(",");
    totals_json(w, name, saved.owner_uid, saved.totals);
  }
  w.raw("],\"segments\":[");
  first = true;
  for (const auto& seg : segments_) {
    if (!std::exchange(first, false)) w.raw(",");
    const auto& k = seg->position_key;
    const auto& c = seg->counters;
    w.raw("{\"dev\":").num(k.dev);
    w.raw(",\"ino\":").num(k.ino);
    w.raw(",\"pid\":").num(k.pid);
    w.raw(",\"start_ticks\":").num(k.start_ticks);
    w.raw(",\"created_unix_ns\":").num(k.created_unix_ns);
    w.raw(",\"lanes\":[");
    bool first_lane = true;
    for (const auto& p : seg->reader->positions()) {
      if (!std::exchange(first_lane, false)) w.raw(",");
      w.raw("[").num(p.next_seq).raw(",").num(p.rows_accounted).raw("]");
    }
    w.raw("],\"rows_read\":").num(seg->rows_read);
    w.raw(",\"rows_overwritten\":").num(seg->rows_overwritten);
    w.raw(",\"counters\":").nums(std::array<std::uint64_t, 6>{c.rows_written, c.rows_sampled_out, c.rows_committed,
                                                                c.rows_too_large, c.rows_bad_input, c.rows_no_lane});
    w.raw("}");
  }
  w.raw("]}");
  last_checkpoint_bytes_ = doc.size();
  return {core::StateDocument{kPositionsDoc, state_version(), std::move(doc)}};
}

std::vector<std::string> Ingest::restore(
    const std::vector<std::pair<std::string, core::StateReadResult>>& stored) {
  std::vector<std::string> problems;
  for (const auto& [name, r] : stored) {
    if (r.status != core::StateReadResult::Status::ok) {
      problems.push_back("ingest: document '" + name + "' unusable (" + r.detail +
                         "); rings are read from their start and stream counters start at 0");
      continue;
    }
    if (name != kPositionsDoc) {
      problems.push_back("ingest: unknown document '" + name + "' ignored");
      continue;
    }
    try {
      const auto doc = nlohmann::json::parse(r.data);
      std::map<std::string, SavedStream> totals;
      for (const auto& j : doc.at("streams")) {
        SavedStream s;
        const auto name_text = j.at("name").get<std::string>();
        if (!naming::valid_stream_name(name_text)) throw std::runtime_error("invalid stream name");
        s.owner_uid = j.at("owner_uid").get<std::uint32_t>();
        s.totals.records_total = j.at("records").get<std::uint64_t>();
        s.totals.writes_total = j.at("writes").get<std::uint64_t>();
        s.totals.sampled_out_total = j.at("sampled_out").get<std::uint64_t>();
        s.totals.dropped = j.at("dropped").get<decltype(s.totals.dropped)>();
        // Causes are appended over versions (too_large): a shorter array is an older agent's.
        const auto invalid = j.at("invalid").get<std::vector<std::uint64_t>>();
        if (invalid.size() > s.totals.invalid.size()) throw std::runtime_error("too many invalid causes");
        std::copy(invalid.begin(), invalid.end(), s.totals.invalid.begin());
        s.totals.schema_mismatch_total = j.at("schema_mismatch").get<std::uint64_t>();
        s.totals.backlog_total = j.at("backlog").get<std::uint64_t>();
        s.totals.restarts_total = j.at("restarts").get<std::uint64_t>();
        s.totals.last_record_unix_ns = j.at("last_record_unix_ns").get<std::uint64_t>();
        totals[name_text] = s;
      }
      std::map<PositionKey, SavedSegment> positions;
      for (const auto& j : doc.at("segments")) {
        PositionKey k{j.at("dev").get<std::uint64_t>(), j.at("ino").get<std::uint64_t>(),
                      j.at("pid").get<std::uint64_t>(), j.at("start_ticks").get<std::uint64_t>(),
                      j.at("created_unix_ns").get<std::uint64_t>()};
        SavedSegment s;
        for (const auto& l : j.at("lanes")) {
          s.lanes.push_back({l.at(0).get<std::uint64_t>(), l.at(1).get<std::uint64_t>()});
        }
        if (s.lanes.empty() || s.lanes.size() > format::kMaxLanes) throw std::runtime_error("bad lane count");
        s.rows_read = j.at("rows_read").get<std::uint64_t>();
        s.rows_overwritten = j.at("rows_overwritten").get<std::uint64_t>();
        const auto c = j.at("counters").get<std::array<std::uint64_t, 6>>();
        s.counters.rows_written = c[0];
        s.counters.rows_sampled_out = c[1];
        s.counters.rows_committed = c[2];
        s.counters.rows_too_large = c[3];
        s.counters.rows_bad_input = c[4];
        s.counters.rows_no_lane = c[5];
        positions[k] = std::move(s);
      }
      saved_totals_ = std::move(totals);
      saved_positions_ = std::move(positions);
      core::log::info("ingest: restored the counters of {} stream(s) and the read positions of {} "
                   "segment(s)", saved_totals_.size(), saved_positions_.size());
    } catch (const std::exception& ex) {
      problems.push_back("ingest: document '" + name + "' cannot be used (" + ex.what() +
                         "); rings are read from their start and stream counters start at 0");
    }
  }
  return problems;
}

}  // namespace mltap::ingest
