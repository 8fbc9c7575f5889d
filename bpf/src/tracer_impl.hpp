// The tracer's state and its parts, internal to bpf/src (bpf/tracer.hpp is the interface).
// Tracer::Impl is split by concern: tracer.cpp (lifecycle, the event thread, the public methods),
// tracer_events.cpp (kernel records -> core::SystemEvent), tracer_files.cpp (fanotify file watch
// and who changed a file), tracer_histograms.cpp (per-process latency histograms and their derived
// events), tracer_tracking.cpp (the tracked-process set in the kernel and in userspace).
#pragma once

#include <bpf/libbpf.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <unistd.h>

#include "bpf/mltap_events.h"
#include "bpf/src/file_watch.hpp"
#include "bpf/src/loader.hpp"
#include "bpf/src/wall_clock.hpp"
#include "bpf/tracer.hpp"
#include "core/system_event.hpp"
#include "core/tracer_stats.hpp"
#include "mltap/naming.hpp"

namespace mltap::bpf {

static_assert(core::kHistogramSlots == MLTAP_HIST_SLOTS,
              "histogram layout must match the kernel side");
static_assert(sizeof(mltap_hist) == sizeof(std::uint64_t) * (MLTAP_HIST_SLOTS + 2));

inline constexpr std::uint32_t kMaxComponents = 4096;

// The keys (pids) of a BPF hash map, at most `limit`. A map that changes meanwhile may be walked
// partly twice or not entirely; every caller tolerates that.
std::vector<std::uint32_t> map_keys(int fd, std::size_t limit);

inline std::string basename_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

inline std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

// Per-process histogram bookkeeping in userspace (kernel keeps cumulative counts per tgid).
struct HistBook {
  std::unordered_map<std::uint32_t, mltap_hist> last;               // last value read per tgid
  std::unordered_map<std::uint32_t, core::Log2Histogram> interval;  // since the last summary
  std::map<std::string, core::Log2Histogram> by_component;          // cumulative, for metrics
};

struct Tracer::Impl {
  TracerConfig cfg;
  TracerOptions opts;
  EventCallback on_event;

  // --- BPF ---
  SkelPtr skel;
  std::vector<bpf_link*> links;
  std::vector<AttachedProg> attached;
  ring_buffer* rb = nullptr;
  int tracked_fd = -1;
  int proc_names_fd = -1;  // name at fork/exec by tgid (file watch actors gone from /proc)
  int runq_fd = -1;
  int bio_fd = -1;
  std::atomic<std::uint64_t>* bits = nullptr;  // mmap of tracked_bits
  std::size_t bits_words = 0;
  std::size_t bits_bytes = 0;
  std::string method_used[kProbeCount];
  bool map_ops_need_cap_bpf = false;

  // --- files ---
  FileWatch watch;
  std::vector<std::string> pending_dirs;  // configured but not (yet) watchable
  std::string watch_note;

  // --- thread ---
  std::thread thread;
  int stop_fd = -1;
  int epoll_fd = -1;
  std::atomic<bool> started{false};
  std::atomic<bool> stopping{false};
  WallClock clock;
  long page_size = sysconf(_SC_PAGESIZE);

  // --- state shared with track()/stats() ---
  // Lifetime of the BPF objects and the fanotify fd: shared by every caller that uses them,
  // exclusive for stop()'s teardown (so a scrape or track() racing with shutdown is safe).
  mutable std::shared_mutex life;
  mutable std::mutex mu;
  std::array<core::ProbeStatus, kProbeCount> status;
  std::vector<std::string> component_names;  // id - 1
  std::unordered_map<std::string, std::uint32_t> component_ids;
  struct Proc {
    std::uint64_t start_ticks = 0;
    std::uint32_t component_id = 0;
    std::uint32_t root_pid = 0;
    std::uint64_t root_start_ticks = 0;
    bool explicit_ = false;
    std::string comm;
  };
  std::unordered_map<std::uint32_t, Proc> procs;  // tracked processes userspace knows of
  // Tracked processes that exited recently: fanotify reports only a pid, often read after the
  // writer (a short-lived `mv`) has exited. Kept for a minute.
  struct Exited {
    Proc proc;
    std::uint64_t boot_ns = 0;
  };
  std::unordered_map<std::uint32_t, Exited> exited;
  std::map<std::pair<std::string, core::EventKind>, std::uint64_t> counts;
  std::uint64_t fanotify_overflows = 0;
  std::uint64_t actors_from_proc = 0, actors_named_by_kernel = 0, actors_unnamed = 0;
  std::uint64_t userspace_lost = 0;
  HistBook runq, bio;

  Impl(TracerConfig c, TracerOptions o) : cfg(std::move(c)), opts(std::move(o)) {
    for (std::size_t i = 0; i < kProbeCount; ++i) {
      status[i].probe = std::string(probe_name(static_cast<Probe>(i)));
    }
  }

  ~Impl() { teardown(); }

  void teardown() noexcept;

  core::ProbeStatus& st(Probe p) { return status[static_cast<std::size_t>(p)]; }

  // Capability check for later map updates (track/untrack after capabilities are dropped):
  // a forked child without any capability tries a lookup on the same fd.
  bool probe_map_ops_without_caps();

  void setup_maps();

  void teardown_bpf_only() noexcept;

  void set_bit(std::uint32_t pid, bool on);

  void setup_file_watch();

  void update_watch_status();

  void retry_pending_dirs();

  void log_status_once();

  // ---------------- events ----------------

  std::string component_name(std::uint32_t id) const;

  std::optional<std::uint32_t> component_id(std::string_view name);

  static core::ProcessRef ref_of(const mltap_proc& p);

  static std::string addr_text(std::uint16_t family, const std::uint8_t* a);

  bool name_matches(const std::string& name) const;

  // Resolves a path a process passed to a system call (relative to its cwd or a dir fd).
  std::string resolve(std::uint32_t pid, std::int32_t dfd, const std::string& p) const;

  static int on_ring_record(void* ctx, void* data, size_t size);

  void on_record(const void* data, std::size_t size);

  // Keeps userspace's view of the tracked set in step with the kernel's.
  void after_kernel_event(const mltap_event& e, const core::SystemEvent& ev);

  void deliver(const core::SystemEvent& ev);

  void on_file_event(const RawFileEvent& r);

  // Is the actor tracked (in the kernel's set, or userspace's when BPF is off)?
  void attribute_actor(core::SystemEvent& ev);

  void prune_exited();

  static constexpr std::uint64_t FAN_RENAME_MASK = 0x10000000;  // FAN_RENAME
  static constexpr std::uint64_t FAN_CLOSE_WRITE_MASK = 0x00000008;
  static constexpr std::uint64_t FAN_DELETE_MASK = 0x00000200;
  static constexpr std::uint64_t FAN_MOVED_FROM_MASK = 0x00000040;
  static constexpr std::uint64_t FAN_MOVED_TO_MASK = 0x00000080;

  // ---------------- histograms ----------------

  // Reads the kernel's per-process histograms and folds the change into the component totals.
  // With `final_pid`, only that process, whose entries are then deleted (it has exited).
  void collect_histograms(std::optional<std::uint32_t> final_pid = std::nullopt);

  void collect_map(int fd, HistBook& book, std::optional<std::uint32_t> final_pid);

  // Derived events: a tracked process whose p99 over the last interval reached the threshold.
  void emit_latency_summaries(std::uint64_t interval_ns);

  // Drops kernel entries of processes that died without an exit event reaching us (ring full,
  // exit probe off) and fills in start times the kernel could not know.
  void garbage_collect();

  // ---------------- thread ----------------

  void run();

  void start_thread();

  // ---------------- tracking ----------------

  // Descendants alive now (their children from now on are added in the kernel).
  std::vector<std::pair<std::uint32_t, std::uint64_t>> descendants(std::uint32_t root) const;
};

}  // namespace mltap::bpf
