#include "agent/ingest/ingest.hpp"

#include <dirent.h>
#include <fnmatch.h>
#include <limits.h>
#include <signal.h>
#include <sys/vfs.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <cmath>

#include <spdlog/spdlog.h>

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
    spdlog::warn("ingest.verify_producers is off: INSECURE, any local user can make mltapd read, "
                 "trace and signal in the name of any process (docs/security.md)");
  }
  // The trust check believes what proc_dir says: anything but procfs there is a test setup.
  constexpr long kProcSuperMagic = 0x9fa0;
  struct statfs fs {};
  if (config_.verify_producers &&
      (::statfs(config_.proc_dir.c_str(), &fs) != 0 || fs.f_type != kProcSuperMagic)) {
    spdlog::warn("ingest.proc_dir {} is not a procfs: producer verification trusts whoever can "
                 "write there", config_.proc_dir);
  }
}

Ingest::~Ingest() {
  stop();
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
          spdlog::warn("presence file {} was held by uid {} (mode {:o}); removed it and created mltapd's own", path,
                       st.st_uid, st.st_mode & 07777);
        }
        fd = create();
        err = errno;
      } else if (presence_squatter_ < 0) {
        presence_squatter_ = st.st_uid;
        spdlog::warn("presence file {} is held by uid {} ({}) and mltapd cannot replace it ({}): closing "
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
      spdlog::warn("cannot create presence file {}: {} (retrying quietly)", path, std::strerror(err));
    }
    return;
  }
  const std::string text = std::to_string(::getpid()) + "\n";
  if (::write(fd, text.data(), text.size()) < 0) {
    spdlog::warn("cannot write presence file {}: {}", path, std::strerror(errno));
  }
  struct stat st {};
  ::fstat(fd, &st);
  if (presence_squatter_ >= 0) spdlog::info("presence file {} created", path);
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
    poll_all(now, more);
    if (now - last_tick_ >= 100'000'000ull || now < last_tick_) {
      for (auto& [name, st] : streams_) st->stats.tick(now);
      for (BatchSink* s : sinks_) s->on_tick(now);
      last_tick_ = now;
    }
    if (snapshot_wanted_.load(std::memory_order_relaxed) || now < last_publish_ ||
        now - last_publish_ >= static_cast<std::uint64_t>(config_.snapshot_interval.count())) {
      publish(now);
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
    poll_all(now, more);
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
    spdlog::info("stream '{}' (owner uid {}) forgotten: no attached producers and ingest.max_streams ({}) "
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
  MergedStream* raw = st.get();
  streams_.emplace(id.stream, std::move(st));
  spdlog::info("stream '{}' (component '{}', {}) discovered, owned by uid {}", id.stream,
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
  return it == streams_.end() || it->second->owner_uid == uid;
}

bool Ingest::refuse_unverified(const std::string& path, const FileKey& key, TrustFailure cause,
                               const std::string& detail, const SegmentIdentity& id,
                               std::uint64_t now) {
  auto [it, first] = unverified_.try_emplace(path, Unverified{key, cause, 0, 0});
  Unverified& u = it->second;
  const bool changed = !first && !(u.key == key);
  if (first || changed) {
    // Counted and logged once per file (and again only if the file changed).
    unverified_total_[std::string(trust_failure_name(cause))]++;
    spdlog::warn("segment {} refused, producer not verified ({}): claims pid {} uid {} for stream "
                 "'{}': {}",
                 path, trust_failure_name(cause), id.producer.pid, id.uid, id.stream, detail);
    u.backoff = 0;
  } else {
    spdlog::debug("segment {} still not verified ({}): {}", path, trust_failure_name(cause), detail);
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
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && static_cast<std::uint64_t>(st.st_ino) == ino &&
      static_cast<std::uint64_t>(st.st_dev) == dev) {
    if (::unlink(path.c_str()) == 0) {
      removed_total_[reason]++;
      spdlog::info("removed waiting segment {} ({}, never attached)", path, reason);
    } else {
      spdlog::warn("cannot remove segment {}: {}", path, std::strerror(errno));
    }
  }
}

void Ingest::refuse_quota(const std::string& path, const FileKey& key, std::uint32_t uid, const char* which,
                          const std::string& stream, std::uint64_t now) {
  auto [it, first] = quota_waiting_.try_emplace(path, QuotaWait{key, 0, 0});
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
  if (warn) spdlog::warn("{} (further refusals of uid {} are logged at debug level)", text, uid);
  else spdlog::debug("{}", text);
  w.key = key;
  // 1 s doubling to 10 s: a slot frees when one of the uid's producers is retired.
  w.backoff = std::min<std::uint64_t>(w.backoff == 0 ? 1'000'000'000ull : w.backoff * 2, 10'000'000'000ull);
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
      spdlog::warn("artifact {} of stream '{}' (pid {}) not watched: {}", path, id.stream,
                   id.producer.pid,
                   !under ? "not under ingest.artifact_dirs" : "the producer's uid cannot read it");
      continue;
    }
    // The directory is what gets watched: hand the resolved directory on.
    out.emplace_back(resolved);
  }
  return out;
}

void Ingest::scan(std::uint64_t now) {
  touch_presence(now);
  DIR* dir = ::opendir(config_.shm_dir.c_str());
  if (!dir) {
    static bool warned = false;
    if (!warned) spdlog::warn("cannot list {}: {}", config_.shm_dir, std::strerror(errno));
    warned = true;
  } else {
    std::vector<std::string> names;
    while (dirent* de = ::readdir(dir)) {
      if (naming::is_segment_file_name(config_.ns, de->d_name)) names.emplace_back(de->d_name);
    }
    ::closedir(dir);
    for (const auto& n : names) {
      const std::string path = config_.shm_dir + "/" + n;
      struct stat st {};
      if (::lstat(path.c_str(), &st) != 0) continue;
      const bool known = std::any_of(segments_.begin(), segments_.end(), [&](const auto& s) {
        return s->dev == st.st_dev && s->ino == st.st_ino;
      });
      if (known) continue;
      const FileKey key{static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino),
                        static_cast<std::uint64_t>(st.st_size),
                        static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000ll + st.st_mtim.tv_nsec};
      auto rej = rejected_files_.find(path);
      if (rej != rejected_files_.end()) {
        if (rej->second == key) continue;  // unchanged since we refused it
        rejected_files_.erase(rej);
      }
      if (auto q = quota_waiting_.find(path); q != quota_waiting_.end()) {
        // Same inode (a live producer changes size and mtime as it writes): wait for the retry.
        const bool same = q->second.key.dev == key.dev && q->second.key.ino == key.ino;
        if (same && now < q->second.retry_at) continue;
      }
      if (auto un = unverified_.find(path); un != unverified_.end()) {
        const bool retry = trust_failure_transient(un->second.cause) && now >= un->second.retry_at;
        if (un->second.key == key && !retry) continue;
      }
      RejectReason reason{};
      std::string detail;
      auto reader = SegmentReader::open(path, config_.reader, reason, detail);
      if (!reader) {
        // A producer creating its segment right now: give it pending_grace before refusing.
        const bool maybe_creating = reason == RejectReason::too_small ||
                                    reason == RejectReason::bad_magic ||
                                    reason == RejectReason::bad_layout;
        auto [pit, inserted] = pending_since_.try_emplace(path, now);
        if (maybe_creating && now - pit->second < static_cast<std::uint64_t>(config_.pending_grace.count())) {
          continue;
        }
        pending_since_.erase(pit);
        rejected_files_[path] = key;
        rejected_total_[std::string(reject_reason_name(reason))]++;
        spdlog::warn("segment {} refused ({}): {}", path, reject_reason_name(reason), detail);
        continue;
      }
      // The kernel vouches for the producer the header names, or the segment is not read.
      Verification trust;
      bool history = false;
      if (config_.verify_producers) {
        trust = verify_producer(reader->file(), reader->identity(), pid_ns_inode_, config_.proc_dir);
        // A ring whose producer already ended (a short batch job, a producer that closed its
        // stream or was killed before the next scan) cannot be verified any more, but its records
        // are the file owner's: read them as that uid's history, with no process identity, so
        // nothing is ever signalled, traced or watched for it, then remove it like any ended
        // producer's (docs/security.md, "history"). Refusing it would leave its file in the ring
        // directory for good and its rows uncounted.
        const auto state = reader->state();
        const bool ended = (state && *state == format::SegmentState::closed) ||
                           trust.failure == TrustFailure::process_gone;
        history = !trust.ok() && ended && reader->file().uid == reader->identity().uid;
        if (history) {
          spdlog::info("segment {} read as history of uid {}: producer ended, not verifiable ({}: {})",
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
          continue;
        }
        if (!trust.ok()) {
          // A producer maps its file before it writes the magic, so not_mapped is not expected
          // from a live SDK producer; a half-set-up one still gets pending_grace.
          auto [pit, inserted] = pending_since_.try_emplace(path, now);
          if (trust_failure_transient(trust.failure) && !unverified_.count(path) &&
              now - pit->second < static_cast<std::uint64_t>(config_.pending_grace.count())) {
            continue;
          }
          pending_since_.erase(pit);
          refuse_unverified(path, key, trust.failure, trust.detail, reader->identity(), now);
          continue;
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
        continue;
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
        }
        continue;
      }
      if (quota_waiting_.erase(path) > 0) spdlog::info("segment {} of uid {} attached: within its quota now", path, uid);
      if (unverified_.erase(path) > 0) {
        spdlog::info("segment {} verified on retry", path);
      }
      if (!history) reader->set_artifacts(watchable_artifacts(reader->identity(), trust.credentials));
      MergedStream* st_ptr = stream_for(reader->identity(), uid, now);
      if (!st_ptr && history && quota_waiting_.count(path)) {
        const auto st_now = reader->state();
        const bool closed = st_now && *st_now == format::SegmentState::closed;
        remove_waiting(path, key.dev, key.ino, closed ? "closed" : "producer_dead");
        continue;
      }
      if (!st_ptr) {
        // Over the stream cap: waits like a quota refusal (retried with backoff, removed once its
        // producer is gone), so that an ignored stream's files do not stay forever.
        auto [wit, first] = quota_waiting_.try_emplace(path, QuotaWait{key, 0, 0, true});
        if (first) {
          streams_cut_++;
          spdlog::warn("segment {} of stream '{}' ignored: ingest.max_streams ({}) reached", path,
                       reader->identity().stream, config_.max_streams);
        }
        wit->second.key = key;
        wit->second.over_max_streams = true;
        wit->second.backoff = std::min<std::uint64_t>(
            wit->second.backoff == 0 ? 1'000'000'000ull : wit->second.backoff * 2, 10'000'000'000ull);
        wit->second.retry_at = now + wit->second.backoff;
        continue;
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
        spdlog::info("segment {} of stream '{}' is backlog: its producer ended before this agent "
                     "started; its records are counted (mltap_stream_backlog_records_total) but "
                     "not analyzed, and never become the stream's reference",
                     path, reader->identity().stream);
      }
      const auto& id = reader->identity();
      spdlog::info("producer pid {} ({}) of stream '{}' attached: {}", id.producer.pid,
                   id.component, id.stream, path);
      if (st_ptr->pending_deaths > 0) {
        st_ptr->pending_deaths--;
        st_ptr->restarts_total++;
      }
      seg->reader = std::move(reader);
      if (observer_ && !history) observer_->on_producer_attached(seg->reader->identity());
      segments_.push_back(std::move(seg));
    }
  }
  // Forget pending and refused entries whose file disappeared (the gauges count files that exist).
  for (auto it = pending_since_.begin(); it != pending_since_.end();) {
    struct stat st {};
    if (::lstat(it->first.c_str(), &st) != 0) it = pending_since_.erase(it);
    else ++it;
  }
  for (auto it = unverified_.begin(); it != unverified_.end();) {
    struct stat st {};
    if (::lstat(it->first.c_str(), &st) != 0) it = unverified_.erase(it);
    else ++it;
  }
  for (auto it = quota_waiting_.begin(); it != quota_waiting_.end();) {
    struct stat st {};
    if (::lstat(it->first.c_str(), &st) != 0) it = quota_waiting_.erase(it);
    else ++it;
  }
  for (auto& seg : segments_) refresh_segment(*seg, *seg->stream, now);
  retire_segments(now);
  first_scan_done_ = true;
}

// Producer counters and write rate; before every snapshot, so that a snapshot's counters and
// record counts are read together.
void Ingest::refresh_counters(Segment& seg, MergedStream& st, std::uint64_t now) {
  SegmentReader& r = *seg.reader;
  if (auto pc = r.producer_counters()) {
    auto add = [](std::uint64_t& total, std::uint64_t now_v, std::uint64_t old_v) {
      if (now_v > old_v) total += now_v - old_v;  // a counter going backwards is ignored
    };
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
  refresh_counters(seg, st, now);
  if (seg.state == ProducerState::alive || seg.state == ProducerState::unknown) {
    const auto& id = r.identity();
    auto state = r.state();
    if (state && *state == format::SegmentState::closed) {
      seg.state = ProducerState::closed;
      seg.gone_since = now;
      spdlog::info("producer pid {} of stream '{}' closed its stream", id.producer.pid, id.stream);
      if (observer_) observer_->on_producer_gone(id, seg.state);
    } else if (!r.healthy()) {
      seg.state = ProducerState::dead;
      seg.gone_since = now;
    } else if (id.pid_ns_inode != 0 && id.pid_ns_inode == pid_ns_inode_) {
      auto ticks = naming::process_start_ticks(id.producer.pid, config_.proc_dir);
      if (!ticks || *ticks != id.producer.start_ticks) {
        seg.state = ProducerState::dead;
        seg.gone_since = now;
        st.pending_deaths++;
        spdlog::info("producer pid {} of stream '{}' is gone", id.producer.pid, id.stream);
        if (observer_) observer_->on_producer_gone(id, seg.state);
      } else {
        seg.state = ProducerState::alive;
      }
    } else {
      seg.state = ProducerState::unknown;  // another pid namespace: we cannot judge liveness
    }
  }
  if (now - last_heartbeat_ >= 1'000'000'000ull && r.healthy()) r.heartbeat(now);
}

void Ingest::retire_segments(std::uint64_t now) {
  if (now - last_heartbeat_ >= 1'000'000'000ull) last_heartbeat_ = now;
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
    // Anything committed and never read is lost to the reader.
    const std::uint64_t unread = seg.reader->unread_committed_rows();
    seg.stream->dropped[static_cast<std::size_t>(DropReason::overwritten)] += unread;
    // The rows of a write the producer was killed in: its rows_written counted them (writes_total
    // has them) and nothing else will.
    if (seg.state == ProducerState::dead) {
      const std::uint64_t interrupted = seg.reader->interrupted_rows();
      seg.stream->dropped[static_cast<std::size_t>(DropReason::interrupted)] += interrupted;
      if (interrupted > 0) {
        spdlog::info("producer pid {} of stream '{}' died inside a write: {} rows counted as interrupted",
                     seg.reader->identity().producer.pid, seg.stream->info.name, interrupted);
      }
    }
    const char* reason = seg.state == ProducerState::closed ? "closed" : "producer_dead";
    if (config_.remove_dead_segments) {
      struct stat st {};
      if (::lstat(seg.path.c_str(), &st) == 0 && static_cast<std::uint64_t>(st.st_ino) == seg.ino &&
          static_cast<std::uint64_t>(st.st_dev) == seg.dev) {
        if (::unlink(seg.path.c_str()) == 0) {
          removed_total_[reason]++;
          spdlog::info("removed segment {} ({})", seg.path, reason);
        } else {
          spdlog::warn("cannot remove segment {}: {}", seg.path, std::strerror(errno));
        }
      }
    }
    it = segments_.erase(it);
  }
}

void Ingest::poll_all(std::uint64_t now, bool& more) {
  polls_++;
  for (auto& segp : segments_) {
    Segment& seg = *segp;
    if (!seg.reader->healthy()) continue;
    Visitor v(*this, seg);
    const PollCounts c = seg.reader->poll(v);
    MergedStream& st = *seg.stream;
    if (c.records > 0 || c.rows_overwritten > 0) seg.last_new_data = now;
    else if (!c.more) seg.last_empty_poll = now;
    seg.rows_overwritten += c.rows_overwritten;
    st.dropped[static_cast<std::size_t>(DropReason::overwritten)] += c.rows_overwritten;
    for (std::size_t i = 0; i < kInvalidReasonCount; ++i) st.invalid[i] += c.records_invalid[i];
    if (c.more) more = true;
    if (!seg.reader->healthy()) {
      rejected_total_[std::string(reject_reason_name(RejectReason::truncated))]++;
      spdlog::warn("segment {} of stream '{}' faulted (file truncated?); closing it", seg.path,
                   st.info.name);
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
  for (auto& [name, stp] : streams_) {
    MergedStream& st = *stp;
    if (now - st.rate_base_time >= 5'000'000'000ull) {
      st.record_rate = static_cast<double>(st.records_total - st.rate_base_records) /
                       (static_cast<double>(now - st.rate_base_time) / 1e9);
      st.rate_base_records = st.records_total;
      st.rate_base_time = now;
    }
    StreamSnapshot s;
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
  for (auto& segp : segments_) {
    Segment& seg = *segp;
    const bool gone = seg.state == ProducerState::dead || seg.state == ProducerState::closed;
    (gone ? snap->segments_draining : snap->segments_active)++;
    auto it = std::find_if(snap->streams.begin(), snap->streams.end(),
                           [&](const StreamSnapshot& s) { return s.info.name == seg.stream->info.name; });
    if (it == snap->streams.end()) continue;
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
  snapshot_wanted_.store(false, std::memory_order_release);
}

std::shared_ptr<const IngestSnapshot> Ingest::snapshot() const {
  std::lock_guard<std::mutex> lock(snapshot_mutex_);
  return snapshot_;
}

std::shared_ptr<const IngestSnapshot> Ingest::fresh_snapshot(std::chrono::milliseconds timeout) {
  if (!running_.load()) {
    return snapshot();
  }
  const auto before = snapshot();
  snapshot_wanted_.store(true, std::memory_order_release);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto s = snapshot();
    if (s != before) return s;
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

}  // namespace mltap::ingest
