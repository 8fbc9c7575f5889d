// The ingest layer of mltapd: finds ring segments in the namespace, reads them on one thread,
// merges the producers of a stream, keeps the first statistics and hands decoded batches to the
// sinks behind it (detectors). Other threads see it only through immutable snapshots and the
// ControlPlane (commands executed on the ingest thread).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "agent/ingest/segment.hpp"
#include "core/batch.hpp"
#include "core/control_plane.hpp"
#include "core/ingest_state.hpp"
#include "core/state_store.hpp"

namespace mltap::core {
class ConfigSection;
}

namespace mltap::ingest {

struct IngestConfig {
  std::string ns = "default";
  std::string shm_dir = "/dev/shm";
  std::string proc_dir = "/proc";
  std::chrono::nanoseconds poll_interval = std::chrono::milliseconds(5);
  // Discovery: new, changed and removed files are learnt from inotify on shm_dir, handled every
  // scan_interval; the whole directory is listed again every rescan_interval (a safety net, and
  // after an inotify queue overflow), or every scan_interval when inotify is unavailable.
  std::chrono::nanoseconds scan_interval = std::chrono::milliseconds(250);
  std::chrono::nanoseconds rescan_interval = std::chrono::seconds(30);
  // A segment with no new record for a second is polled every idle_poll_interval instead of
  // every poll_interval (its ring must hold that long of writes when it wakes up); its producer
  // counters and closed state are then read every 2 s.
  std::chrono::nanoseconds idle_poll_interval = std::chrono::milliseconds(500);
  // A hot segment is read when a lane's unread backlog reaches a quarter of its ring (or of its
  // index) or once read_delay passed since its last read: a slow stream is then read many records
  // at a time, which keeps its detector state in the cache for all of them instead of fetching
  // it from memory for every record (at 1,000 streams of 100 rows/s that was most of the
  // agent's cost: 57% of a core read at once, 43% with 200 ms, 30% with 500 ms;
  // docs/benchmarks.md). Its data reach the detectors at most this much later; its ring must
  // hold this long of writes, as for idle_poll_interval (or a quarter fills first and it is read
  // then). 0: every poll_interval, as soon as anything is committed. LTTng's consumer reads the
  // same way: when a sub-buffer fills or its read timer fires.
  std::chrono::nanoseconds read_delay = std::chrono::milliseconds(500);
  std::chrono::nanoseconds stats_window = std::chrono::seconds(10);
  std::chrono::nanoseconds dead_producer_grace = std::chrono::seconds(30);
  std::chrono::nanoseconds closed_segment_grace = std::chrono::seconds(2);
  std::chrono::nanoseconds pending_grace = std::chrono::seconds(5);  // a half-created segment
  std::chrono::nanoseconds snapshot_interval = std::chrono::milliseconds(250);
  std::uint32_t max_streams = 256;
  std::uint32_t max_features_per_stream = 128;
  // Per-uid quotas (by the segment file's owner), so that one uid cannot crowd out another's
  // streams: attached segments, and distinct streams those segments write. A segment leaves the
  // count when it is retired (its producer closed or died, drained, grace passed).
  std::uint32_t max_streams_per_uid = 64;
  std::uint32_t max_segments_per_uid = 256;
  bool remove_dead_segments = true;
  ReaderLimits reader;
  // The producer trust check (docs/security.md). Turning it off is INSECURE: any local user can
  // then make the agent read, trace and signal on behalf of any process. Tests of the check only.
  bool verify_producers = true;
  // Stream name patterns (fnmatch(3), e.g. "fraud/*") -> the uids allowed to write them. Streams
  // no pattern matches belong to the uid whose verified segment created them.
  std::vector<std::pair<std::string, std::vector<std::uint32_t>>> stream_owners;
  // Directories under which declared artifact paths may be watched (fanotify); empty: none.
  // The default is where deployed models usually live. Not /tmp, /var/tmp or /dev/shm: shared
  // scratch space that any user writes, whose events would mostly be other users' files.
  std::vector<std::string> artifact_dirs = {"/srv", "/opt", "/var/lib", "/home"};
};

// Parses the `ingest:` section.
void parse_ingest_config(core::ConfigSection& section, IngestConfig& out);

// Told on the ingest thread when a producer's segment appears and when its producer is gone
// (dead, or closed its stream). The tracer and the correlator learn the producers this way.
class ProducerObserver {
 public:
  virtual ~ProducerObserver() = default;
  virtual void on_producer_attached(const core::SegmentIdentity& producer) = 0;
  virtual void on_producer_gone(const core::SegmentIdentity& producer, core::ProducerState state) = 0;
};

class Ingest : public core::ControlPlane, public core::Checkpointable {
 public:
  explicit Ingest(IngestConfig config);
  ~Ingest() override;
  Ingest(const Ingest&) = delete;
  Ingest& operator=(const Ingest&) = delete;

  // Sinks see every decoded batch, on the ingest thread, in order. Add before start().
  void add_sink(core::BatchSink* sink);
  // At most one; set before start().
  void set_producer_observer(ProducerObserver* observer) { observer_ = observer; }
  void start();
  void stop();

  // Runs one scan + poll round on the caller's thread (tests; not with start()).
  void run_once();

  // Latest snapshot (never null after construction); cheap, lock-free for practical purposes.
  std::shared_ptr<const core::IngestSnapshot> snapshot() const;
  // Forces a fresh snapshot, taken after reading everything committed when it was asked for,
  // and waits for it (tests, CLI); returns the latest on timeout.
  std::shared_ptr<const core::IngestSnapshot> fresh_snapshot(std::chrono::milliseconds timeout);

  // ControlPlane: executed on the ingest thread, waited for with a timeout.
  std::vector<core::ProducerId> producers(const std::string& stream) const override;
  core::SignalReport signal_producers(const std::string& stream, int signal) override;
  core::ControlResult set_flag(const std::string& stream, const std::string& flag,
                                std::uint32_t value) override;
  core::ControlResult boost_sampling(const std::string& stream, std::uint32_t permille,
                                      std::uint64_t until_unix_ns) override;
  std::vector<core::RetainedRecord> recent_records(const std::string& stream,
                                                    std::size_t max_records,
                                                    std::size_t max_bytes) const override;

  // Checkpointable (ingest thread, or before start()): read positions per segment and the
  // streams' counters, so that a restarted agent resumes where it stopped and
  // mltap_stream_records_total continues without counting a record twice.
  std::vector<core::StateDocument> checkpoint() override;
  std::string state_prefix() const override { return "ingest."; }
  std::uint32_t state_version() const override { return 1; }
  std::vector<std::string> restore(
      const std::vector<std::pair<std::string, core::StateReadResult>>& stored) override;

 private:
  struct Segment;
  struct MergedStream;
  struct FileKey {
    std::uint64_t dev, ino, size;
    std::int64_t mtime_ns;
    bool operator==(const FileKey&) const = default;
  };

  class Visitor;

  void loop();
  void scan(std::uint64_t now);
  // inotify on shm_dir (re)armed; false when unavailable (then every scan lists the directory).
  bool arm_watch();
  // Names inotify reported since the last call; removed names are forgotten here. Sets `full`
  // when events were lost (queue overflow, watch gone).
  void drain_events(std::vector<std::string>& names, bool& full);
  // Lists shm_dir: every name is a candidate; entries of files that no longer exist are dropped.
  void list_directory(std::vector<std::string>& names);
  // Forgets every record of a file that is gone (the gauges count files that exist).
  void forget_file(const std::string& path);
  // Looks at one segment file: attach, refuse, or leave it waiting.
  void consider(const std::string& name, std::uint64_t now);
  // Refused segments (trust check, stream owner, quota, max_streams) whose producer is dead:
  // removed once dead_producer_grace passed (docs/security.md, "Removing refused segments").
  void reap_refused(std::uint64_t now);
  // Unlinks `name` in shm_dir if it is still the regular file `dev`/`ino` owned by `uid`.
  bool unlink_same_file(const std::string& name, std::uint64_t dev, std::uint64_t ino, std::int64_t uid);
  // Releases memory of maps that emptied and returns free heap to the system after many removals.
  void compact(std::size_t freed);
  void poll_all(std::uint64_t now, bool& more, bool everything);
  void refresh_segment(Segment& seg, MergedStream& st, std::uint64_t now);
  // force: also an idle ring's, whose counters are otherwise read every kIdleRefreshNs.
  void refresh_counters(Segment& seg, MergedStream& st, std::uint64_t now, bool force = false);
  void retire_segments(std::uint64_t now);
  void publish(std::uint64_t now);
  void run_commands();
  void touch_presence(std::uint64_t now);
  MergedStream* stream_for(const core::SegmentIdentity& id, std::uint32_t owner_uid, std::uint64_t now);
  // Whether a verified segment of `uid` may write `stream` (configured owners, else the uid that
  // created the stream).
  bool stream_accepts(const std::string& stream, std::uint32_t uid) const;
  // Remembers a trust refusal of the file at `path`: counted and logged on its first refusal,
  // retried with backoff when the cause may pass, otherwise when the file changes. True when this
  // refusal was counted (the file's first, or the file changed).
  bool refuse_unverified(const std::string& path, const FileKey& key, TrustFailure cause,
                         const std::string& detail, const core::SegmentIdentity& id, std::uint64_t now);
  // Whether a new segment of `uid` for `stream` fits the uid's quotas; otherwise which one it
  // exceeds ("segments" or "streams").
  const char* quota_exceeded(std::uint32_t uid, const std::string& stream) const;
  // Remembers a quota refusal of the file at `path`: counted by uid once per file (and again if
  // it changed), logged once per uid; retried with backoff, since slots free when producers end.
  void refuse_quota(const std::string& path, const FileKey& key, std::uint32_t uid, const char* which,
                    const std::string& stream, std::uint64_t now);
  // A waiting segment whose producer has ended: nobody will read it; unlink it (same inode only).
  void remove_waiting(const std::string& path, std::uint64_t dev, std::uint64_t ino, const char* reason);
  std::vector<std::string> watchable_artifacts(const core::SegmentIdentity& id,
                                               const ProcessCredentials& who);
  // Runs `fn` on the ingest thread (or inline when not started) and waits up to `timeout`.
  bool execute(std::function<void()> fn, std::chrono::milliseconds timeout) const;

  // A segment's identity for its saved read position: same inode, same producer, same creation.
  struct PositionKey {
    std::uint64_t dev = 0, ino = 0, pid = 0, start_ticks = 0, created_unix_ns = 0;
    auto operator<=>(const PositionKey&) const = default;
  };
  struct SavedSegment {
    std::vector<SegmentReader::LanePosition> lanes;
    std::uint64_t rows_read = 0, rows_overwritten = 0;
    ProducerCounters counters;
  };

  IngestConfig config_;
  std::uint64_t pid_ns_inode_ = 0;
  std::vector<core::BatchSink*> sinks_;
  ProducerObserver* observer_ = nullptr;
  std::map<std::string, std::unique_ptr<MergedStream>> streams_;
  std::vector<std::unique_ptr<Segment>> segments_;
  std::unordered_map<std::string, Segment*> by_path_;  // attached segments by file path
  std::vector<Segment*> hot_;                           // polled every loop
  std::vector<Segment*> idle_;                          // polled in slices (idle_poll_interval)
  std::size_t idle_cursor_ = 0;
  double idle_credit_ = 0;               // idle segments due for a poll, fractional
  std::uint64_t last_idle_poll_ = 0;
  std::unordered_map<std::string, FileKey> rejected_files_;  // not retried until they change
  // What a refused file's header claims about its producer, to remove it once that is dead.
  struct Claim {
    core::ProducerId producer;
    std::uint64_t pid_ns = 0;
    std::uint32_t header_uid = 0;
    std::uint32_t file_uid = 0;
    std::uint64_t check_at = 0;    // next liveness check (agent time)
    std::uint64_t check_backoff = 0;
    std::uint64_t dead_since = 0;  // agent time the producer was first seen dead; 0 alive/unknown
  };
  struct Unverified {
    FileKey key;
    TrustFailure cause;
    std::uint64_t retry_at = 0;  // agent time; transient causes only
    std::uint64_t backoff = 0;
    Claim claim;
  };
  std::unordered_map<std::string, Unverified> unverified_;
  std::map<std::string, std::uint64_t> unverified_total_;
  std::map<std::string, std::uint64_t> stream_owner_refused_;
  struct QuotaWait {
    FileKey key;
    std::uint64_t retry_at = 0;
    std::uint64_t backoff = 0;
    bool over_max_streams = false;  // ingest.max_streams, not a per-uid quota
    Claim claim;
  };
  // Verified segments waiting for a slot (per-uid quota or max_streams), by path, while the file
  // exists; removed by the agent once their producer is gone (they were verified once).
  std::unordered_map<std::string, QuotaWait> quota_waiting_;  // by path, while the file exists
  std::map<std::string, std::uint64_t> quota_refused_;     // by uid label (capped)
  std::map<std::uint32_t, bool> quota_logged_;             // uids already warned about
  std::uint64_t artifacts_refused_ = 0;
  std::unordered_map<std::string, std::uint64_t> pending_since_;
  int inotify_fd_ = -1, watch_ = -1, dir_fd_ = -1;
  bool need_full_scan_ = true, watch_warned_ = false, list_warned_ = false;
  std::size_t freed_since_trim_ = 0;
  std::uint64_t full_scans_ = 0;
  std::uint64_t last_full_scan_ = 0;
  // Liveness of producers named by refused files, per scan: one /proc read per pid.
  std::unordered_map<std::uint32_t, std::optional<std::uint64_t>> ticks_cache_;
  // Each producer's /proc/<pid>/maps parsed once per scan for all of its new segments (trust.hpp).
  MapsCache maps_cache_;
  // Restored from the state directory; positions are used once, when their segment is attached.
  std::map<PositionKey, SavedSegment> saved_positions_;
  struct SavedStream {
    core::StreamTotals totals;
    std::uint32_t owner_uid = 0;
  };
  std::map<std::string, SavedStream> saved_totals_;  // until the stream is seen again
  bool state_dirty_ = true;
  std::size_t last_checkpoint_bytes_ = 0;  // size of the last positions document (reserve)
  bool publish_soon_ = true;  // something changed that the next snapshot must show
  std::map<std::string, std::uint64_t> rejected_total_;
  std::map<std::string, std::uint64_t> removed_total_;
  std::uint64_t streams_cut_ = 0;
  std::uint64_t features_cut_ = 0;
  std::uint64_t polls_ = 0;
  bool first_scan_done_ = false;  // segments found before it ended were there when we started
  std::uint64_t last_scan_ = 0, last_tick_ = 0, last_publish_ = 0, last_heartbeat_ = 0;
  std::uint64_t publish_cost_ns_ = 0;  // how long the last snapshot took to build
  std::vector<double> decode_buf_;
  std::string presence_path_;     // set once mltapd created the file (its inode below)
  std::uint64_t last_presence_ = 0;
  int presence_fd_ = -1;          // touched through the descriptor, so only our inode
  std::uint64_t presence_dev_ = 0, presence_ino_ = 0;
  std::int64_t presence_squatter_ = -1;  // uid holding the name that we cannot replace; -1 none

  std::atomic<bool> running_{false};
  std::thread thread_;
  mutable std::mutex snapshot_mutex_;
  std::shared_ptr<const core::IngestSnapshot> snapshot_;
  // fresh_snapshot: requests numbered 1, 2, ...; the last one a published snapshot answers.
  std::atomic<std::uint64_t> snapshot_requested_{0}, snapshot_answered_{0};

  mutable std::mutex command_mutex_;
  mutable std::deque<std::function<void()>> commands_;
};

}  // namespace mltap::ingest
