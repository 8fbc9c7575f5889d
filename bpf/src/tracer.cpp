#include "bpf/tracer.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <linux/capability.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "bpf/mltap_events.h"
#include "bpf/src/file_watch.hpp"
#include "bpf/src/loader.hpp"
#include "bpf/src/probe_plan.hpp"
#include "bpf/src/proc.hpp"
#include "bpf/src/wall_clock.hpp"
#include "mltap.skel.h"

namespace mltap::bpf {

using core::kHistogramSlots;
using core::Log2Histogram;
using core::ProbeStatus;
using core::ProgramStats;
using core::TracerStats;

static_assert(kHistogramSlots == MLTAP_HIST_SLOTS, "histogram layout must match the kernel side");
static_assert(sizeof(mltap_hist) == sizeof(std::uint64_t) * (MLTAP_HIST_SLOTS + 2));

namespace {

using core::EventKind;
using core::FileOp;
using core::ProcessRef;
using core::SystemEvent;

constexpr std::uint32_t kMaxComponents = 4096;

using namespace plan;  // the probe table and kernel probing (probe_plan.hpp)

std::string basename_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::string comm_of(const char* c) { return std::string(c, strnlen(c, MLTAP_COMM_LEN)); }

std::string path_of(const char* p) { return std::string(p, strnlen(p, MLTAP_PATH_LEN)); }

// Per-process histogram bookkeeping in userspace (kernel keeps cumulative counts per tgid).
struct HistBook {
  std::unordered_map<std::uint32_t, mltap_hist> last;       // last value read per tgid
  std::unordered_map<std::uint32_t, Log2Histogram> interval; // since the last summary
  std::map<std::string, Log2Histogram> by_component;        // cumulative, for metrics
};

Log2Histogram delta_of(const mltap_hist& now, const mltap_hist* before) {
  Log2Histogram d;
  bool reset = false;
  if (before) {
    for (std::size_t i = 0; i < kHistogramSlots; ++i) {
      if (now.slots[i] < before->slots[i]) reset = true;
    }
    if (now.count < before->count) reset = true;
  }
  const mltap_hist* b = (before && !reset) ? before : nullptr;
  for (std::size_t i = 0; i < kHistogramSlots; ++i) d.slots[i] = now.slots[i] - (b ? b->slots[i] : 0);
  d.count = now.count - (b ? b->count : 0);
  d.sum_ns = now.sum_ns - (b ? b->sum_ns : 0);
  return d;
}

}  // namespace

// ======================================================================================

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
  std::array<ProbeStatus, kProbeCount> status;
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
  std::map<std::pair<std::string, EventKind>, std::uint64_t> counts;
  std::uint64_t fanotify_overflows = 0;
  std::uint64_t userspace_lost = 0;
  HistBook runq, bio;

  Impl(TracerConfig c, TracerOptions o) : cfg(std::move(c)), opts(std::move(o)) {
    for (std::size_t i = 0; i < kProbeCount; ++i) {
      status[i].probe = std::string(probe_name(static_cast<Probe>(i)));
    }
  }

  ~Impl() { teardown(); }

  void teardown() noexcept {
    if (rb) ring_buffer__free(rb);
    rb = nullptr;
    for (auto* l : links) bpf_link__destroy(l);
    links.clear();
    attached.clear();
    if (bits) munmap(static_cast<void*>(bits), bits_bytes);
    bits = nullptr;
    skel.reset();
    if (stop_fd >= 0) ::close(stop_fd);
    if (epoll_fd >= 0) ::close(epoll_fd);
    stop_fd = epoll_fd = -1;
  }

  ProbeStatus& st(Probe p) { return status[static_cast<std::size_t>(p)]; }

  // Capability check for later map updates (track/untrack after capabilities are dropped):
  // a forked child without any capability tries a lookup on the same fd.
  bool probe_map_ops_without_caps() {
    const pid_t child = fork();
    if (child < 0) return false;
    if (child == 0) {
      __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
      __user_cap_data_struct data[2]{};
      if (syscall(SYS_capset, &hdr, data) != 0) _exit(2);
      __u32 key = 1;
      mltap_tracked v{};
      const int r = bpf_map_lookup_elem(tracked_fd, &key, &v);
      _exit(r == 0 || errno == ENOENT ? 0 : 1);
    }
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }

  void setup_maps() {
    if (!skel) return;
    tracked_fd = bpf_map__fd(skel->maps.tracked);
    runq_fd = bpf_map__fd(skel->maps.runq_hist);
    bio_fd = bpf_map__fd(skel->maps.bio_hist);
    bits_words = bpf_map__max_entries(skel->maps.tracked_bits);
    bits_bytes = ((bits_words * 8 + page_size - 1) / page_size) * page_size;
    void* m = mmap(nullptr, bits_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                   bpf_map__fd(skel->maps.tracked_bits), 0);
    if (m == MAP_FAILED) {
      spdlog::warn("ebpf: cannot map the tracked-process bitmap: {}", std::strerror(errno));
      bits = nullptr;
    } else {
      bits = static_cast<std::atomic<std::uint64_t>*>(m);
    }
    static_assert(sizeof(std::atomic<std::uint64_t>) == sizeof(std::uint64_t));
    rb = ring_buffer__new(bpf_map__fd(skel->maps.events), &Impl::on_ring_record, this, nullptr);
    if (!rb) {
      const std::string e = "ring buffer: " + err_text(-errno);
      for (std::size_t i = 0; i < kProbeCount; ++i) {
        if (status[i].up && status[i].method != "fanotify") {
          status[i].up = false;
          status[i].reason = e;
        }
      }
      teardown_bpf_only();
      return;
    }
    map_ops_need_cap_bpf = !probe_map_ops_without_caps();
  }

  void teardown_bpf_only() {
    for (auto* l : links) bpf_link__destroy(l);
    links.clear();
    attached.clear();
    if (bits) munmap(static_cast<void*>(bits), bits_bytes);
    bits = nullptr;
    skel.reset();
    tracked_fd = runq_fd = bio_fd = -1;
  }

  void set_bit(std::uint32_t pid, bool on) {
    if (!bits) return;
    const std::size_t w = pid >> 6;
    if (w >= bits_words) return;
    const std::uint64_t m = std::uint64_t{1} << (pid & 63);
    if (on) bits[w].fetch_or(m, std::memory_order_relaxed);
    else bits[w].fetch_and(~m, std::memory_order_relaxed);
  }

  void setup_file_watch() {
    if (!cfg.probe_enabled(Probe::file_watch)) return;
    auto& s = st(Probe::file_watch);
    std::string err;
    if (!watch.open(err)) {
      s.up = false;
      s.reason = err;
      return;
    }
    for (const auto& d : cfg.files.watch_dirs) {
      if (!watch.add_dir(d, err)) {
        pending_dirs.push_back(d);
        watch_note = err;
      }
    }
    update_watch_status();
  }

  void update_watch_status() {
    auto& s = st(Probe::file_watch);
    if (!watch.is_open()) return;
    s.up = watch.dir_count() > 0;
    s.method = s.up ? "fanotify" : "";
    std::string note;
    s.by_configuration = false;
    if (cfg.files.watch_dirs.empty() && watch.dir_count() == 0) {
      note = "no directories to watch yet (ebpf.files.watch_dirs is empty and no producer declared artifacts)";
      s.by_configuration = true;
    } else if (!pending_dirs.empty()) {
      note = std::to_string(pending_dirs.size()) + " of the directories cannot be watched yet (" +
             watch_note + "); retried every second";
    }
    if (!watch.privileged()) {
      note += std::string(note.empty() ? "" : "; ") +
              "started without CAP_SYS_ADMIN: writers' pids are hidden";
    }
    if (!watch.rename_events()) note += std::string(note.empty() ? "" : "; ") + "no FAN_RENAME (kernel < 5.17): renames seen as move halves";
    s.reason = note;
  }

  void retry_pending_dirs() {
    if (pending_dirs.empty() || !watch.is_open()) return;
    std::vector<std::string> still;
    std::string err;
    for (const auto& d : pending_dirs) {
      if (!watch.add_dir(d, err)) {
        still.push_back(d);
        watch_note = err;
      } else {
        spdlog::info("ebpf: now watching {}", d);
      }
    }
    if (still.size() != pending_dirs.size()) {
      pending_dirs = std::move(still);
      std::lock_guard lk(mu);
      update_watch_status();
    }
  }

  void log_status_once() {
    std::string up;
    for (const auto& s : status) {
      if (s.up) up += (up.empty() ? "" : ", ") + s.probe + "(" + s.method + ")";
    }
    spdlog::info("ebpf: probes up: {}", up.empty() ? "none" : up);
    for (const auto& s : status) {
      if (!s.up && s.by_configuration) spdlog::info("ebpf: probe {} is off: {}", s.probe, s.reason);
      else if (!s.up) spdlog::warn("ebpf: probe {} is not running: {}", s.probe, s.reason);
      else if (!s.reason.empty()) spdlog::info("ebpf: probe {}: {}", s.probe, s.reason);
    }
  }

  // ---------------- events ----------------

  std::string component_name(std::uint32_t id) const {
    if (id == 0 || id > component_names.size()) return {};
    return component_names[id - 1];
  }

  std::optional<std::uint32_t> component_id(std::string_view name) {
    if (name.empty()) return 0;
    auto it = component_ids.find(std::string(name));
    if (it != component_ids.end()) return it->second;
    if (component_names.size() >= kMaxComponents) return std::nullopt;
    component_names.emplace_back(name);
    const auto id = static_cast<std::uint32_t>(component_names.size());
    component_ids.emplace(std::string(name), id);
    return id;
  }

  static ProcessRef ref_of(const mltap_proc& p) {
    ProcessRef r;
    r.pid = p.pid;
    r.tid = p.tid;
    r.start_ticks = p.start_ticks;
    r.comm = comm_of(p.comm);
    return r;
  }

  static std::string addr_text(std::uint16_t family, const std::uint8_t* a) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (family == AF_INET) inet_ntop(AF_INET, a, buf, sizeof(buf));
    else if (family == AF_INET6) inet_ntop(AF_INET6, a, buf, sizeof(buf));
    return buf;
  }

  bool name_matches(const std::string& name) const {
    if (name.empty()) return false;
    for (const auto& p : cfg.files.patterns) {
      if (fnmatch(p.c_str(), name.c_str(), 0) == 0) return true;
    }
    return false;
  }

  // Resolves a path a process passed to a system call (relative to its cwd or a dir fd).
  std::string resolve(std::uint32_t pid, std::int32_t dfd, const std::string& p) const {
    if (p.empty() || p[0] == '/') return p;
    std::optional<std::string> base;
    if (dfd == -100 /* AT_FDCWD */) base = proc::read_link(opts.proc_root, pid, "cwd");
    else if (dfd >= 0) base = proc::read_link(opts.proc_root, pid, "fd/" + std::to_string(dfd));
    return base ? join_path(*base, p) : p;
  }

  static int on_ring_record(void* ctx, void* data, size_t size) {
    static_cast<Impl*>(ctx)->on_record(data, size);
    return 0;
  }

  void on_record(const void* data, std::size_t size) {
    if (size < sizeof(mltap_event)) {
      std::lock_guard lk(mu);
      ++userspace_lost;
      return;
    }
    mltap_event e;
    std::memcpy(&e, data, sizeof(e));
    const bool with_paths = e.kind == MLTAP_EV_EXEC || e.kind == MLTAP_EV_FILE;
    if (with_paths && size < sizeof(mltap_path_event)) {
      std::lock_guard lk(mu);
      ++userspace_lost;
      return;
    }
    const auto* pe = with_paths ? static_cast<const mltap_path_event*>(data) : nullptr;

    SystemEvent ev;
    ev.boot_ns = e.ktime_ns;
    ev.unix_ns = clock.to_unix_ns(e.ktime_ns);
    ev.subject = ref_of(e.subject);
    ev.other = ref_of(e.other);
    ev.tracked = e.flags & MLTAP_EF_TRACKED;
    ev.other_tracked = e.flags & MLTAP_EF_OTHER_TRACKED;
    ev.root.pid = e.root_pid;
    ev.root.start_ticks = e.root_start_ticks;
    {
      std::lock_guard lk(mu);
      ev.component = component_name(e.component_id);
      if (auto it = procs.find(e.root_pid); it != procs.end()) ev.root.comm = it->second.comm;
    }
    switch (e.kind) {
      case MLTAP_EV_EXEC:
        ev.kind = EventKind::exec;
        ev.path = path_of(pe->path);
        ev.source = "bpf:" + method_used[static_cast<std::size_t>(Probe::exec)];
        break;
      case MLTAP_EV_FORK:
        ev.kind = EventKind::fork;
        ev.source = "bpf:" + method_used[static_cast<std::size_t>(Probe::fork)];
        if (e.flags & MLTAP_EF_START_APPROX) {
          // tracefs variant: correct the child's start time from /proc and in the kernel.
          if (auto stc = naming::read_proc_stat(ev.other.pid, opts.proc_root)) {
            ev.other.start_ticks = stc->start_ticks;
            mltap_tracked v{};
            if (tracked_fd >= 0 && bpf_map_lookup_elem(tracked_fd, &ev.other.pid, &v) == 0 &&
                v.start_ticks == 0) {
              v.start_ticks = stc->start_ticks;
              bpf_map_update_elem(tracked_fd, &ev.other.pid, &v, BPF_EXIST);
            }
          }
        }
        break;
      case MLTAP_EV_EXIT: {
        ev.kind = EventKind::exit;
        ev.source = "bpf:" + method_used[static_cast<std::size_t>(Probe::exit)];
        const int status = e.u.exit.status;
        if (status & 0x7f) {
          ev.signal = status & 0x7f;
          ev.core_dumped = status & 0x80;
          ev.fatal = true;
        } else {
          ev.exit_code = (status >> 8) & 0xff;
        }
        break;
      }
      case MLTAP_EV_OOM_KILL:
        ev.kind = EventKind::oom_kill;
        ev.source = "bpf:" + method_used[static_cast<std::size_t>(Probe::oom_kill)];
        ev.memory_bytes = e.u.oom.total_vm_pages * static_cast<std::uint64_t>(page_size);
        ev.rss_bytes = (e.u.oom.anon_rss_pages + e.u.oom.file_rss_pages + e.u.oom.shmem_rss_pages) *
                       static_cast<std::uint64_t>(page_size);
        ev.oom_score_adj = e.u.oom.oom_score_adj;
        if (!ev.tracked) ev.component.clear();
        break;
      case MLTAP_EV_SIGNAL:
        ev.kind = EventKind::signal;
        ev.source = "bpf:" + method_used[static_cast<std::size_t>(Probe::signal)];
        ev.signal = e.u.signal.sig;
        ev.signal_code = e.u.signal.code;
        ev.fatal = e.flags & MLTAP_EF_FATAL;
        ev.handled = e.flags & MLTAP_EF_HANDLED;
        break;
      case MLTAP_EV_TCP_RETRANSMIT:
      case MLTAP_EV_TCP_CONNECT_FAILED:
        ev.kind = e.kind == MLTAP_EV_TCP_RETRANSMIT ? EventKind::tcp_retransmit
                                                    : EventKind::tcp_connect_failed;
        ev.source = "bpf:" + method_used[static_cast<std::size_t>(
                                 e.kind == MLTAP_EV_TCP_RETRANSMIT ? Probe::tcp_retransmit
                                                                   : Probe::tcp_connect)];
        ev.tcp.saddr = addr_text(e.u.tcp.family, e.u.tcp.saddr);
        ev.tcp.daddr = addr_text(e.u.tcp.family, e.u.tcp.daddr);
        ev.tcp.sport = e.u.tcp.sport;
        ev.tcp.dport = e.u.tcp.dport;
        ev.tcp.error = e.u.tcp.err;
        ev.tcp.count = e.u.tcp.count;
        break;
      case MLTAP_EV_FILE: {
        ev.kind = EventKind::file_change;
        ev.source = "bpf:" + method_used[static_cast<std::size_t>(Probe::file_syscalls)];
        const std::string p1 = resolve(ev.subject.pid, e.u.file.dfd, path_of(pe->path));
        const std::string p2 = resolve(ev.subject.pid, e.u.file.dfd2, path_of(pe->path2));
        if (e.u.file.op == MLTAP_FILE_OPEN_WRITE) {
          ev.file_op = FileOp::written;
          ev.path = p1;
        } else if (e.u.file.op == MLTAP_FILE_UNLINK) {
          ev.file_op = FileOp::deleted;
          ev.path = p1;
        } else if (e.u.file.op == MLTAP_FILE_RENAME) {
          if (name_matches(basename_of(p2))) {
            ev.file_op = FileOp::renamed_onto;
            ev.path = p2;
            ev.old_path = p1;
          } else {
            ev.file_op = FileOp::renamed_away;
            ev.path = p1;
            ev.old_path = p2;
          }
        }
        if (!name_matches(basename_of(ev.path))) return;  // kernel pre-filter is coarser
        break;
      }
      default: {
        std::lock_guard lk(mu);
        ++userspace_lost;
        return;
      }
    }
    after_kernel_event(e, ev);
    deliver(ev);
  }

  // Keeps userspace's view of the tracked set in step with the kernel's.
  void after_kernel_event(const mltap_event& e, const SystemEvent& ev) {
    if (ev.kind == EventKind::fork && !(e.flags & MLTAP_EF_THREAD) && ev.tracked) {
      std::lock_guard lk(mu);
      Proc p;
      p.start_ticks = ev.other.start_ticks;
      p.component_id = e.component_id;
      p.root_pid = e.root_pid;
      p.root_start_ticks = e.root_start_ticks;
      p.comm = ev.other.comm;
      procs[ev.other.pid] = std::move(p);
    } else if (ev.kind == EventKind::exec && ev.tracked) {
      std::lock_guard lk(mu);
      if (auto it = procs.find(ev.subject.pid); it != procs.end()) it->second.comm = ev.subject.comm;
    } else if (ev.kind == EventKind::exit && !(e.flags & MLTAP_EF_THREAD) && ev.tracked) {
      // The kernel has already forgotten it; read its histograms one last time.
      collect_histograms(ev.subject.pid);
      std::lock_guard lk(mu);
      Proc gone;
      if (auto it = procs.find(ev.subject.pid); it != procs.end()) {
        gone = std::move(it->second);
        procs.erase(it);
      } else {
        gone.start_ticks = ev.subject.start_ticks;
        gone.component_id = e.component_id;
        gone.root_pid = e.root_pid;
        gone.root_start_ticks = e.root_start_ticks;
        gone.comm = ev.subject.comm;
      }
      exited[ev.subject.pid] = Exited{std::move(gone), ev.boot_ns};
    }
  }

  void deliver(const SystemEvent& ev) {
    {
      std::lock_guard lk(mu);
      ++counts[{ev.tracked ? ev.component : std::string(), ev.kind}];
    }
    if (on_event) {
      try {
        on_event(ev);
      } catch (const std::exception& ex) {
        spdlog::error("ebpf: event callback threw: {}", ex.what());
      } catch (...) {
        spdlog::error("ebpf: event callback threw");
      }
    }
  }

  void on_file_event(const RawFileEvent& r) {
    SystemEvent ev;
    ev.kind = EventKind::file_change;
    ev.source = "fanotify";
    ev.boot_ns = WallClock::boot_now_ns();  // fanotify has no timestamp: time of reading
    ev.unix_ns = clock.to_unix_ns(ev.boot_ns);
    if (r.mask & FAN_RENAME_MASK) {
      const bool new_match = name_matches(r.new_name);
      const bool old_match = name_matches(r.name);
      const std::string oldp = join_path(r.dir.empty() ? "(unwatched)" : r.dir, r.name);
      const std::string newp = join_path(r.new_dir.empty() ? "(unwatched)" : r.new_dir, r.new_name);
      if (new_match && !r.new_dir.empty()) {
        ev.file_op = FileOp::renamed_onto;
        ev.path = newp;
        ev.old_path = oldp;
      } else if (old_match && !r.dir.empty()) {
        ev.file_op = FileOp::renamed_away;
        ev.path = oldp;
        ev.old_path = newp;
      } else {
        return;
      }
    } else {
      if (!name_matches(r.name) || r.dir.empty()) return;
      ev.path = join_path(r.dir, r.name);
      if (r.mask & FAN_CLOSE_WRITE_MASK) ev.file_op = FileOp::written;
      else if (r.mask & FAN_DELETE_MASK) ev.file_op = FileOp::deleted;
      else if (r.mask & FAN_MOVED_TO_MASK) ev.file_op = FileOp::renamed_onto;
      else if (r.mask & FAN_MOVED_FROM_MASK) ev.file_op = FileOp::renamed_away;
      else return;
    }
    if (r.pid != 0 && r.pid == static_cast<std::uint32_t>(getpid())) return;  // our own doing
    ev.subject.pid = r.pid;
    ev.subject.tid = r.pid;
    attribute_actor(ev);
    if (!ev.tracked && !cfg.files.report_untracked_actors) return;
    deliver(ev);
  }

  // Is the actor tracked (in the kernel's set, or userspace's when BPF is off)?
  void attribute_actor(SystemEvent& ev) {
    const std::uint32_t pid = ev.subject.pid;
    if (pid == 0) return;
    std::optional<mltap_tracked> kv;
    if (tracked_fd >= 0) {
      mltap_tracked v{};
      if (bpf_map_lookup_elem(tracked_fd, &pid, &v) == 0) kv = v;
    }
    const auto alive = naming::read_proc_stat(pid, opts.proc_root);
    std::lock_guard lk(mu);
    auto adopt = [&](const Proc& p) {
      ev.tracked = true;
      ev.subject.start_ticks = p.start_ticks;
      ev.subject.comm = p.comm;
      ev.component = component_name(p.component_id);
      ev.root.pid = p.root_pid;
      ev.root.start_ticks = p.root_start_ticks;
    };
    if (kv) {
      Proc p;
      p.start_ticks = kv->start_ticks;
      p.component_id = kv->component_id;
      p.root_pid = kv->root_pid;
      p.root_start_ticks = kv->root_start_ticks;
      adopt(p);
    } else if (auto it = procs.find(pid); it != procs.end()) {
      adopt(it->second);
    } else if (auto x = exited.find(pid); x != exited.end()) {
      // Exited since; unless the pid already belongs to another process.
      if (!alive || alive->start_ticks == x->second.proc.start_ticks) adopt(x->second.proc);
    }
    if (auto it = procs.find(ev.root.pid); ev.tracked && it != procs.end()) {
      ev.root.comm = it->second.comm;
    }
    if (alive && (ev.subject.start_ticks == 0 || ev.subject.start_ticks == alive->start_ticks)) {
      ev.subject.start_ticks = alive->start_ticks;
      ev.subject.comm = alive->comm;
    }
  }

  void prune_exited() {
    const std::uint64_t now = WallClock::boot_now_ns();
    std::lock_guard lk(mu);
    for (auto it = exited.begin(); it != exited.end();) {
      if (now - it->second.boot_ns > 60'000'000'000ULL) it = exited.erase(it);
      else ++it;
    }
  }

  static constexpr std::uint64_t FAN_RENAME_MASK = 0x10000000;     // FAN_RENAME
  static constexpr std::uint64_t FAN_CLOSE_WRITE_MASK = 0x00000008;
  static constexpr std::uint64_t FAN_DELETE_MASK = 0x00000200;
  static constexpr std::uint64_t FAN_MOVED_FROM_MASK = 0x00000040;
  static constexpr std::uint64_t FAN_MOVED_TO_MASK = 0x00000080;

  // ---------------- histograms ----------------

  // Reads the kernel's per-process histograms and folds the change into the component totals.
  // With `final_pid`, only that process, whose entries are then deleted (it has exited).
  void collect_histograms(std::optional<std::uint32_t> final_pid = std::nullopt) {
    collect_map(runq_fd, runq, final_pid);
    collect_map(bio_fd, bio, final_pid);
  }

  void collect_map(int fd, HistBook& book, std::optional<std::uint32_t> final_pid) {
    if (fd < 0) return;
    std::vector<std::uint32_t> keys;
    if (final_pid) {
      keys.push_back(*final_pid);
    } else {
      std::uint32_t key = 0, next = 0;
      const std::uint32_t* prev = nullptr;
      while (keys.size() < (1u << 20) && bpf_map_get_next_key(fd, prev, &next) == 0) {
        keys.push_back(next);
        key = next;
        prev = &key;
      }
    }
    for (std::uint32_t pid : keys) {
      mltap_hist h{};
      if (bpf_map_lookup_elem(fd, &pid, &h) != 0) continue;
      std::optional<std::uint32_t> comp;
      bool alive = false;
      {
        std::lock_guard lk(mu);
        if (auto it = procs.find(pid); it != procs.end()) {
          comp = it->second.component_id;
          alive = true;
        }
      }
      if (!comp && tracked_fd >= 0) {
        mltap_tracked v{};
        if (bpf_map_lookup_elem(tracked_fd, &pid, &v) == 0) {
          comp = v.component_id;
          alive = true;
        }
      }
      std::lock_guard lk(mu);
      auto last = book.last.find(pid);
      const Log2Histogram d = delta_of(h, last == book.last.end() ? nullptr : &last->second);
      const std::string name = comp ? component_name(*comp) : std::string("unknown");
      book.by_component[name.empty() ? std::string("unknown") : name].add(d);
      book.interval[pid].add(d);
      if (final_pid || !alive) {
        book.last.erase(pid);
        book.interval.erase(pid);
        bpf_map_delete_elem(fd, &pid);
      } else {
        book.last[pid] = h;
      }
    }
  }

  // Derived events: a tracked process whose p99 over the last interval reached the threshold.
  void emit_latency_summaries(std::uint64_t interval_ns) {
    std::vector<SystemEvent> out;
    auto scan = [&](HistBook& book, EventKind kind, std::chrono::nanoseconds threshold) {
      for (auto& [pid, h] : book.interval) {
        if (threshold.count() > 0 && h.count >= cfg.latency_min_samples &&
            h.quantile_upper_ns(0.99) >= static_cast<std::uint64_t>(threshold.count())) {
          SystemEvent ev;
          ev.kind = kind;
          ev.source = "derived";
          ev.boot_ns = WallClock::boot_now_ns();
          ev.unix_ns = clock.to_unix_ns(ev.boot_ns);
          ev.subject.pid = pid;
          ev.tracked = true;
          if (auto it = procs.find(pid); it != procs.end()) {
            ev.subject.start_ticks = it->second.start_ticks;
            ev.subject.comm = it->second.comm;
            ev.component = component_name(it->second.component_id);
            ev.root.pid = it->second.root_pid;
            ev.root.start_ticks = it->second.root_start_ticks;
            if (auto r = procs.find(ev.root.pid); r != procs.end()) ev.root.comm = r->second.comm;
          }
          ev.latency.interval_ns = interval_ns;
          ev.latency.samples = h.count;
          ev.latency.p50_ns = h.quantile_upper_ns(0.5);
          ev.latency.p99_ns = h.quantile_upper_ns(0.99);
          ev.latency.max_ns = h.max_upper_ns();
          out.push_back(std::move(ev));
        }
      }
      book.interval.clear();
    };
    {
      std::lock_guard lk(mu);
      scan(runq, EventKind::runqueue_latency, cfg.runqueue_report_threshold);
      scan(bio, EventKind::block_io_latency, cfg.block_io_report_threshold);
    }
    for (const auto& ev : out) deliver(ev);
  }

  // Drops kernel entries of processes that died without an exit event reaching us (ring full,
  // exit probe off) and fills in start times the kernel could not know.
  void garbage_collect() {
    if (tracked_fd < 0) return;
    std::vector<std::uint32_t> keys;
    std::uint32_t key = 0, next = 0;
    const std::uint32_t* prev = nullptr;
    while (keys.size() < cfg.max_tracked_processes * 2u &&
           bpf_map_get_next_key(tracked_fd, prev, &next) == 0) {
      keys.push_back(next);
      key = next;
      prev = &key;
    }
    for (std::uint32_t pid : keys) {
      mltap_tracked v{};
      if (bpf_map_lookup_elem(tracked_fd, &pid, &v) != 0) continue;
      auto s = naming::read_proc_stat(pid, opts.proc_root);
      const bool dead = !s || s->state == 'Z' || s->state == 'X' ||
                        (v.start_ticks != 0 && s->start_ticks != v.start_ticks);
      if (dead) {
        bpf_map_delete_elem(tracked_fd, &pid);
        set_bit(pid, false);
        collect_histograms(pid);
        std::lock_guard lk(mu);
        procs.erase(pid);
      } else if (v.start_ticks == 0) {
        v.start_ticks = s->start_ticks;
        bpf_map_update_elem(tracked_fd, &pid, &v, BPF_EXIST);
      }
    }
  }

  // ---------------- thread ----------------

  void run() {
    using clk = std::chrono::steady_clock;
    auto last_hist = clk::now();
    auto last_summary = clk::now();
    auto last_gc = clk::now();
    epoll_event evs[4];
    while (!stopping.load(std::memory_order_relaxed)) {
      // The kernel side wakes us only when the ring fills up (wakeup_bytes): poll it anyway.
      const int n = epoll_wait(epoll_fd, evs, 4, 100);
      clock.refresh();
      if (rb) ring_buffer__consume(rb);
      for (int i = 0; i < n; ++i) {
        const int fd = evs[i].data.fd;
        if (fd == stop_fd) return;
        if (fd == watch.fd()) {
          const std::uint64_t over = watch.drain([this](const RawFileEvent& r) { on_file_event(r); });
          if (over) {
            std::lock_guard lk(mu);
            fanotify_overflows += over;
          }
        }
      }
      const auto now = clk::now();
      if (now - last_hist >= std::chrono::seconds(1)) {
        last_hist = now;
        collect_histograms();
        retry_pending_dirs();
        prune_exited();
      }
      if (now - last_summary >= cfg.summary_interval) {
        emit_latency_summaries(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_summary).count()));
        last_summary = now;
      }
      if (now - last_gc >= std::chrono::seconds(5)) {
        last_gc = now;
        garbage_collect();
      }
    }
  }

  void start_thread() {
    stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (stop_fd < 0 || epoll_fd < 0) throw std::system_error(errno, std::generic_category(), "ebpf: epoll");
    auto add = [&](int fd) {
      if (fd < 0) return;
      epoll_event e{};
      e.events = EPOLLIN;
      e.data.fd = fd;
      if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &e) != 0) {
        throw std::system_error(errno, std::generic_category(), "ebpf: epoll_ctl");
      }
    };
    add(stop_fd);
    if (rb) add(ring_buffer__epoll_fd(rb));
    if (watch.is_open()) add(watch.fd());
    thread = std::thread([this] { run(); });
  }

  // ---------------- tracking ----------------

  // Descendants alive now (their children from now on are added in the kernel).
  std::vector<std::pair<std::uint32_t, std::uint64_t>> descendants(std::uint32_t root) const {
    std::unordered_map<std::uint32_t, std::vector<const proc::ProcEntry*>> kids;
    const auto all = proc::list_processes(opts.proc_root);
    for (const auto& e : all) kids[e.stat.ppid].push_back(&e);
    std::vector<std::pair<std::uint32_t, std::uint64_t>> out;
    std::vector<std::uint32_t> todo{root};
    while (!todo.empty() && out.size() < 4096) {
      const std::uint32_t p = todo.back();
      todo.pop_back();
      for (const auto* c : kids[p]) {
        out.emplace_back(c->pid, c->stat.start_ticks);
        todo.push_back(c->pid);
      }
    }
    return out;
  }
};

// ======================================================================================

Tracer::Tracer(TracerConfig config, TracerOptions options)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(options))) {}

Tracer::~Tracer() { stop(); }

const TracerConfig& Tracer::config() const noexcept { return impl_->cfg; }

void Tracer::start(EventCallback on_event) {
  Impl& m = *impl_;
  if (m.started.exchange(true)) throw std::logic_error("bpf::Tracer::start called twice");
  m.on_event = std::move(on_event);
  for (std::size_t i = 0; i < kProbeCount; ++i) {
    const auto p = static_cast<Probe>(i);
    if (!m.cfg.enabled) {
      m.status[i].reason = "eBPF tracing is disabled (ebpf.enabled: false)";
      m.status[i].by_configuration = true;
    } else if (!m.cfg.probe_enabled(p)) {
      m.status[i].by_configuration = true;
      m.status[i].reason = "disabled in the configuration (ebpf.probes." +
                           std::string(probe_name(p)) + ": false)";
    }
  }
  if (m.cfg.enabled) {
    {
      ProbeLoader loader(m.cfg, m.opts, m.status);
      loader.load();
      m.skel = std::move(loader.skel);
      m.links = std::move(loader.links);
      m.attached = std::move(loader.attached);
    }
    m.setup_maps();
    for (std::size_t i = 0; i < kProbeCount; ++i) m.method_used[i] = m.status[i].method;
    m.setup_file_watch();
  }
  m.log_status_once();
  m.start_thread();
}

void Tracer::stop() noexcept {
  Impl& m = *impl_;
  if (!m.started.load()) return;
  if (m.thread.joinable()) {
    m.stopping.store(true);
    const std::uint64_t one = 1;
    if (m.stop_fd >= 0) (void)!::write(m.stop_fd, &one, sizeof(one));
    m.thread.join();
  }
  std::unique_lock life(m.life);
  std::lock_guard lk(m.mu);
  m.teardown();
  for (auto& s : m.status) {
    if (s.up) {
      s.up = false;
      s.reason = "tracer stopped";
    }
  }
}

TrackResult Tracer::track(std::uint32_t pid, std::uint64_t start_ticks, std::string_view component) {
  Impl& m = *impl_;
  std::shared_lock life(m.life);
  if (pid == 0 || start_ticks == 0 || pid == static_cast<std::uint32_t>(getpid())) {
    return TrackResult::invalid;
  }
  const auto st = naming::read_proc_stat(pid, m.opts.proc_root);
  if (!st || st->start_ticks != start_ticks || st->state == 'Z' || st->state == 'X') {
    return TrackResult::no_such_process;
  }
  std::uint32_t comp = 0;
  bool already = false;
  {
    std::lock_guard lk(m.mu);
    auto id = m.component_id(component);
    if (!id) return TrackResult::table_full;
    comp = *id;
    auto it = m.procs.find(pid);
    already = it != m.procs.end() && it->second.start_ticks == start_ticks && it->second.explicit_;
    Impl::Proc p;
    p.start_ticks = start_ticks;
    p.component_id = comp;
    p.root_pid = pid;
    p.root_start_ticks = start_ticks;
    p.explicit_ = true;
    p.comm = st->comm;
    m.procs[pid] = std::move(p);
  }
  if (m.tracked_fd < 0) return TrackResult::userspace_only;
  mltap_tracked v{};
  v.start_ticks = start_ticks;
  v.root_pid = pid;
  v.root_start_ticks = start_ticks;
  v.component_id = comp;
  v.flags = MLTAP_TF_EXPLICIT;
  if (bpf_map_update_elem(m.tracked_fd, &pid, &v, BPF_ANY) != 0) {
    std::lock_guard lk(m.mu);
    m.procs.erase(pid);
    return (errno == E2BIG || errno == ENOMEM) ? TrackResult::table_full
                                               : TrackResult::no_such_process;
  }
  m.set_bit(pid, true);
  // Children alive now: tracked as if the kernel had seen them start.
  for (const auto& [cpid, cticks] : m.descendants(pid)) {
    mltap_tracked c{};
    c.start_ticks = cticks;
    c.root_pid = pid;
    c.root_start_ticks = start_ticks;
    c.component_id = comp;
    c.flags = MLTAP_TF_INHERITED;
    if (bpf_map_update_elem(m.tracked_fd, &cpid, &c, BPF_NOEXIST) == 0) {
      m.set_bit(cpid, true);
      std::lock_guard lk(m.mu);
      Impl::Proc p;
      p.start_ticks = cticks;
      p.component_id = comp;
      p.root_pid = pid;
      p.root_start_ticks = start_ticks;
      m.procs.emplace(cpid, std::move(p));
    }
  }
  return already ? TrackResult::already_tracked : TrackResult::tracked;
}

bool Tracer::untrack(std::uint32_t pid, std::uint64_t start_ticks) {
  Impl& m = *impl_;
  std::shared_lock life(m.life);
  bool found = false;
  std::vector<std::uint32_t> gone;
  {
    std::lock_guard lk(m.mu);
    auto it = m.procs.find(pid);
    if (it != m.procs.end() && it->second.start_ticks == start_ticks) {
      found = true;
      for (const auto& [p, info] : m.procs) {
        if (info.root_pid == pid && info.root_start_ticks == start_ticks) gone.push_back(p);
      }
    }
  }
  if (m.tracked_fd >= 0) {
    // The kernel may know children userspace has not heard of yet.
    std::uint32_t key = 0, next = 0;
    const std::uint32_t* prev = nullptr;
    std::vector<std::uint32_t> keys;
    while (bpf_map_get_next_key(m.tracked_fd, prev, &next) == 0 && keys.size() < (1u << 20)) {
      keys.push_back(next);
      key = next;
      prev = &key;
    }
    for (std::uint32_t k : keys) {
      mltap_tracked v{};
      if (bpf_map_lookup_elem(m.tracked_fd, &k, &v) != 0) continue;
      if (v.root_pid == pid && v.root_start_ticks == start_ticks) {
        found = true;
        gone.push_back(k);
      }
    }
  }
  std::sort(gone.begin(), gone.end());
  gone.erase(std::unique(gone.begin(), gone.end()), gone.end());
  for (std::uint32_t p : gone) {
    if (m.tracked_fd >= 0) {
      bpf_map_delete_elem(m.tracked_fd, &p);
      m.set_bit(p, false);
      m.collect_histograms(p);
    }
    std::lock_guard lk(m.mu);
    m.procs.erase(p);
  }
  return found;
}

bool Tracer::watch_directory(const std::string& dir) {
  Impl& m = *impl_;
  std::shared_lock life(m.life);
  if (!m.watch.is_open()) return false;
  std::string err;
  if (!m.watch.add_dir(dir, err)) {
    spdlog::warn("ebpf: cannot watch {}: {}", dir, err);
    return false;
  }
  std::lock_guard lk(m.mu);
  m.update_watch_status();
  return true;
}

std::vector<ProbeStatus> Tracer::probe_status() const {
  std::lock_guard lk(impl_->mu);
  return {impl_->status.begin(), impl_->status.end()};
}

TracerStats Tracer::stats() const {
  const Impl& m = *impl_;
  std::shared_lock life(m.life);
  TracerStats s;
  std::array<std::uint64_t, MLTAP_PROG_COUNT> lost{};
  std::array<std::uint64_t, MLTAP_MAP_COUNT> full{};
  if (m.skel) {
    const int ncpu = libbpf_num_possible_cpus();
    if (ncpu > 0) {
      std::vector<std::uint64_t> per_cpu(static_cast<std::size_t>(ncpu));
      for (std::uint32_t i = 0; i < MLTAP_PROG_COUNT; ++i) {
        if (bpf_map_lookup_elem(bpf_map__fd(m.skel->maps.lost), &i, per_cpu.data()) == 0) {
          for (auto v : per_cpu) lost[i] += v;
        }
      }
      for (std::uint32_t i = 0; i < MLTAP_MAP_COUNT; ++i) {
        if (bpf_map_lookup_elem(bpf_map__fd(m.skel->maps.map_full), &i, per_cpu.data()) == 0) {
          for (auto v : per_cpu) full[i] += v;
        }
      }
    }
    std::uint32_t key = 0, next = 0;
    const std::uint32_t* prev = nullptr;
    while (m.tracked_fd >= 0 && bpf_map_get_next_key(m.tracked_fd, prev, &next) == 0 &&
           s.tracked_processes < (1u << 20)) {
      ++s.tracked_processes;
      key = next;
      prev = &key;
    }
  }
  std::lock_guard lk(m.mu);
  s.probes.assign(m.status.begin(), m.status.end());
  for (const auto& [k, n] : m.counts) {
    s.events.push_back({k.first, std::string(core::event_kind_name(k.second)), n});
  }
  for (std::uint32_t i = 0; i < MLTAP_PROG_COUNT; ++i) s.lost_by_program[std::string(prog_label(i))] = lost[i];
  s.lost_by_program["file_watch"] = m.fanotify_overflows;
  s.lost_by_program["userspace"] = m.userspace_lost;
  for (std::uint32_t i = 0; i < MLTAP_MAP_COUNT; ++i) s.map_full[std::string(map_label(i))] = full[i];
  s.runqueue_by_component = m.runq.by_component;
  s.block_io_by_component = m.bio.by_component;
  if (!m.skel) {
    s.tracked_processes = m.procs.size();
  }
  return s;
}

std::vector<ProgramStats> Tracer::program_stats() const {
  std::vector<ProgramStats> out;
  std::shared_lock life(impl_->life);
  std::lock_guard lk(impl_->mu);
  for (const auto& a : impl_->attached) {
    bpf_prog_info info{};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(a.fd, &info, &len) != 0) continue;
    out.push_back({a.name, a.probe, info.run_cnt, info.run_time_ns});
  }
  return out;
}

std::vector<std::string> Tracer::capabilities_needed_after_start() const {
  std::shared_lock life(impl_->life);
  if (impl_->skel && impl_->map_ops_need_cap_bpf) return {"CAP_BPF"};
  return {};
}

}  // namespace mltap::bpf
