// Segment files: creating one (named stages: plan, create, reserve, map, write the header and
// schema, publish), reserving a lane's pages when it is first claimed, closing, removing the
// segments of dead producers when no agent runs, and the SIGBUS guard.
//
// Why pages are reserved before they are touched: a tmpfs file sized with ftruncate is sparse;
// touching a page of it allocates that page then, and when the file system is full (64 MiB is
// Docker's default /dev/shm) the touch raises SIGBUS in the ML process. posix_fallocate reserves
// the pages up front and fails with ENOSPC instead, which the SDK turns into a ring-less stream
// (or a lane-less thread) with nothing left behind.
//
// Why not Boost.Interprocess (1.74, Debian 12): shared_memory_object creates only under /dev/shm
// by name (no shm_dir), file_mapping only opens existing files (so the O_EXCL|O_NOFOLLOW create
// stays ours), neither can fchown, and both size with ftruncate, the sparse file that SIGBUSed
// on a full /dev/shm; posix_fallocate and MADV_POPULATE_WRITE would go around it through the
// native handle. What would be left for it is the munmap in a destructor, on a path that must
// not throw. The mapping is only a base pointer on the write path either way: no speed to gain.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "mltap/naming.hpp"
#include "stream_core.hpp"

namespace mltap::detail {
namespace {

using namespace mltap::format;

// ---------------------------------------------------------------------------------------------
// SIGBUS guard. Another process with write access to a segment (the same user, or root) can
// truncate it under the producer's mapping; the producer's next access to a page past the new end
// faults with SIGBUS. Checking the file before every write would cost a system call; instead a
// handler recognises faults inside a segment mapping, puts anonymous memory in the mapping's
// place (the interrupted write completes into it, harmlessly) and marks the stream's ring lost,
// so that later writes count their rows as rows_no_ring. Faults elsewhere go to the handler
// that was installed before (or to the default action), as if the guard did not exist.

struct GuardedRange {
  std::atomic<std::uintptr_t> begin{0};
  std::atomic<std::uintptr_t> end{0};
  std::atomic<StreamCore*> core{nullptr};
};
constexpr std::size_t kGuardedRanges = 512;  // more streams than this are left unguarded
GuardedRange g_ranges[kGuardedRanges];
struct sigaction g_previous_sigbus;  // what on_sigbus chains to (written with g_process_mutex)

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
  if (info->si_code > 0) {  // a fault, not a signal sent by someone
    for (auto& r : g_ranges) {
      const std::uintptr_t b = r.begin.load(std::memory_order_acquire);
      const std::uintptr_t e = r.end.load(std::memory_order_relaxed);
      if (b == 0 || addr < b || addr >= e) continue;
      StreamCore* c = r.core.load(std::memory_order_relaxed);
      // Replace what lies past the file's new end (from the faulting page on, at least); the
      // pages still in the file keep their counters and records.
      const std::uintptr_t page = kPageSize;
      std::uintptr_t from = addr & ~(page - 1);
      struct stat st {};
      if (c && c->fd >= 0 && ::fstat(c->fd, &st) == 0 && st.st_size >= 0) {
        from = std::min(from, b + ((static_cast<std::uintptr_t>(st.st_size) + page - 1) & ~(page - 1)));
      }
      from = std::max(from, b);
      void* p = ::mmap(reinterpret_cast<void*>(from), e - from, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      if (p == MAP_FAILED) break;
      if (c && !c->ring_lost.exchange(true, std::memory_order_relaxed)) {
        for (auto& slot : c->recent) slot.store(nullptr, std::memory_order_relaxed);
        static const char msg[] =
            "mltap: a ring file was truncated under its stream by another process; the stream "
            "counts its rows as rows_no_ring from now on\n";
        [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
      }
      return;  // the faulting access is retried on the anonymous page
    }
  }
  const struct sigaction& prev = g_previous_sigbus;
  if ((prev.sa_flags & SA_SIGINFO) != 0 && prev.sa_sigaction != nullptr) {
    prev.sa_sigaction(sig, info, context);
    return;
  }
  if ((prev.sa_flags & SA_SIGINFO) == 0 && prev.sa_handler != SIG_DFL &&
      prev.sa_handler != SIG_IGN) {
    prev.sa_handler(sig);
    return;
  }
  // The default action: a fault repeats when we return and now kills the process as it would
  // have; a sent signal is sent again (it stays blocked until we return).
  ::signal(SIGBUS, SIG_DFL);
  if (info->si_code <= 0) ::raise(sig);
}

// Makes on_sigbus the process's SIGBUS handler, chaining to the one it replaces. Done for every
// new mapping: a library that installed its own handler meanwhile without chaining (mltapd's
// reader does, in processes that host both) is then chained to instead of silently disabling
// the guard. SA_NODEFER: a handler we chain to may leave through siglongjmp without restoring
// the signal mask, which must then not block SIGBUS. With g_process_mutex held.
void install_guard() noexcept {
  struct sigaction current {};
  if (::sigaction(SIGBUS, nullptr, &current) != 0) return;
  if ((current.sa_flags & SA_SIGINFO) != 0 && current.sa_sigaction == on_sigbus) return;
  struct sigaction sa {};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  struct sigaction previous {};
  if (::sigaction(SIGBUS, &sa, &previous) == 0) g_previous_sigbus = previous;
}

// With g_process_mutex held.
void guard_mapping(std::uint8_t* base, std::uint64_t bytes, StreamCore* core) noexcept {
  install_guard();
  for (auto& r : g_ranges) {
    if (r.begin.load(std::memory_order_relaxed) != 0) continue;
    r.core.store(core, std::memory_order_relaxed);
    r.end.store(reinterpret_cast<std::uintptr_t>(base) + bytes, std::memory_order_relaxed);
    r.begin.store(reinterpret_cast<std::uintptr_t>(base), std::memory_order_release);
    return;
  }
}

// With g_process_mutex held.
void unguard_mapping(std::uint8_t* base) noexcept {
  for (auto& r : g_ranges) {
    if (r.begin.load(std::memory_order_relaxed) != reinterpret_cast<std::uintptr_t>(base)) continue;
    r.begin.store(0, std::memory_order_release);
    r.end.store(0, std::memory_order_relaxed);
    r.core.store(nullptr, std::memory_order_relaxed);
  }
}

// ---------------------------------------------------------------------------------------------
// Creating a segment.

struct SegmentPlan {
  Layout layout;
  std::uint32_t index_entries = 0;
  std::uint64_t data_bytes = 0;
  std::uint64_t strings_bytes = 0;   // feature names, concatenated
  std::uint64_t artifacts_at = 0;    // offset of the artifact list in the schema region
  std::uint64_t artifacts_bytes = 0;
  std::uint64_t labels_stream_at = 0;  // ABI 2.1: the labels stream's name, after the artifacts
};

SegmentPlan plan_segment(const StreamCore& c) noexcept {
  SegmentPlan p;
  p.data_bytes = c.options.ring_bytes;
  p.index_entries = static_cast<std::uint32_t>(std::max<std::uint64_t>(1024, p.data_bytes / 128));
  for (const auto& f : c.feature_names) p.strings_bytes += f.size();
  for (const auto& a : c.options.artifacts) p.artifacts_bytes += a.size() + 1;
  p.artifacts_at = sizeof(SchemaHeader) + c.feature_names.size() * sizeof(NameRef) + p.strings_bytes;
  p.labels_stream_at = p.artifacts_at + p.artifacts_bytes;
  p.layout = compute_layout(p.labels_stream_at + c.options.labels_stream.size(), c.options.lanes,
                            p.index_entries,
                            p.data_bytes);
  return p;
}

void say(const StreamCore& c, const char* what, const std::string& where, int err) {
  std::fprintf(stderr, "mltap: stream '%s': %s %s: %s; writes are counted and dropped (rows_no_ring)\n",
               c.name.c_str(), what, where.c_str(), std::strerror(err));
}

std::atomic<std::uint64_t> g_segment_counter{0};  // the <n> of mltap.<ns>.<pid>.<n>

std::string next_segment_path(const StreamCore& c) {
  const std::uint32_t pid = static_cast<std::uint32_t>(::getpid());
  return c.options.shm_dir + "/" + naming::segment_file_name(c.options.ns, pid, g_segment_counter.fetch_add(1));
}

// An unnamed file in shm_dir (O_TMPFILE), linked under its name by publish() once its header is
// complete: a producer killed while creating its segment leaves nothing (the kernel frees an
// unnamed file with its last descriptor). -1 where the file system has no O_TMPFILE, or where
// publish() could not link it (no /proc/self/fd): then create_named_file().
int create_unnamed_file(const StreamCore& c) {
  if (::access("/proc/self/fd", X_OK) != 0) return -1;
  return ::open(c.options.shm_dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
}

// O_EXCL|O_NOFOLLOW under a fresh name: never an existing file, never through a symlink. Only
// where O_TMPFILE is unavailable: killed before its magic is written, this leaves a file no agent
// can judge (shm/FORMAT.md, "Files").
int create_named_file(const StreamCore& c, std::string& file) {
  int fd = -1;
  for (int attempt = 0; attempt < 64 && fd < 0; ++attempt) {
    file = next_segment_path(c);
    fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) say(c, "cannot create a ring in", c.options.shm_dir, errno);
  return fd;
}

// Gives the complete, mapped unnamed file its name. linkat never replaces an existing name (EEXIST:
// the next <n>) nor follows a symlink there; through /proc/self/fd, because AT_EMPTY_PATH needs
// CAP_DAC_READ_SEARCH.
bool publish(const StreamCore& c, int fd, std::string& file) {
  const std::string self = "/proc/self/fd/" + std::to_string(fd);
  for (int attempt = 0; attempt < 64; ++attempt) {
    file = next_segment_path(c);
    if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, file.c_str(), AT_SYMLINK_FOLLOW) == 0) return true;
    if (errno != EEXIST) break;
  }
  say(c, "cannot name the ring in", c.options.shm_dir, errno);
  file.clear();
  return false;
}

// 0600, or 0660 with the group that may read it (umask-independent).
bool set_access(const StreamCore& c, int fd, const std::string& file) {
  mode_t mode = 0600;
  std::string group = c.options.shm_group;
  if (group.empty()) {
    if (const char* g = std::getenv("MLTAP_SHM_GROUP")) group = g;
  }
  if (!group.empty()) {
    struct group* gr = ::getgrnam(group.c_str());
    if (gr && ::fchown(fd, static_cast<uid_t>(-1), gr->gr_gid) == 0) {
      mode = 0660;
    } else {
      std::fprintf(stderr, "mltap: stream '%s': cannot give group '%s' access; ring stays 0600\n",
                   c.name.c_str(), group.c_str());
    }
  }
  if (::fchmod(fd, mode) != 0) {
    say(c, "cannot set the mode of", file, errno);
    return false;
  }
  return true;
}

int reserve(int fd, std::uint64_t offset, std::uint64_t bytes) noexcept {
  return ::posix_fallocate(fd, static_cast<off_t>(offset), static_cast<off_t>(bytes));
}

// The file gets its full size (sparse), then the pages written at creation are reserved: the
// header, control block and schema, every lane header (the reader reads them all), and lane 0,
// which the stream's first writing thread claims. Other lanes are reserved when first claimed.
bool size_and_reserve(const StreamCore& c, int fd, const std::string& file, const SegmentPlan& p) {
  if (::ftruncate(fd, static_cast<off_t>(p.layout.segment_bytes)) != 0) {
    say(c, "cannot size", file, errno);
    return false;
  }
  int err = reserve(fd, 0, p.layout.lanes_offset);
  for (std::uint32_t i = 0; err == 0 && i < c.options.lanes; ++i) {
    const std::uint64_t lane = p.layout.lanes_offset + std::uint64_t{i} * p.layout.lane_stride;
    err = reserve(fd, lane, i == 0 ? p.layout.lane_stride : p.layout.index_offset);
  }
  if (err != 0) {
    say(c, "cannot reserve the ring's pages in", c.options.shm_dir, err);
    return false;
  }
  return true;
}

void write_header(StreamCore& c, const SegmentPlan& p) {
  SegmentHeader& h = *c.header;  // zero-filled by the reservation
  const Layout& l = p.layout;
  h.abi_major = kAbiMajor;
  h.abi_minor = kAbiMinor;
  h.endian_marker = kEndianMarker;
  h.header_bytes = sizeof(SegmentHeader);
  h.word_bits = 64;
  h.segment_bytes = l.segment_bytes;
  h.control_offset = l.control_offset;
  h.schema_offset = l.schema_offset;
  h.schema_bytes = l.schema_bytes;
  h.lanes_offset = l.lanes_offset;
  h.lane_stride = l.lane_stride;
  h.lane_count = c.options.lanes;
  h.index_entries = p.index_entries;
  h.index_offset = l.index_offset;
  h.data_offset = l.data_offset;
  h.data_bytes = p.data_bytes;
  h.max_record_bytes = p.data_bytes / 2;
  const std::uint32_t pid = static_cast<std::uint32_t>(::getpid());
  h.producer_pid = pid;
  h.producer_uid = static_cast<std::uint32_t>(::getuid());
  h.producer_start_ticks = naming::process_start_ticks(pid).value_or(0);
  h.pid_ns_inode = naming::pid_namespace_inode();
  h.created_unix_ns = now_ns(true);
  h.clock = static_cast<std::uint32_t>(c.options.clock);
  timespec res{};
  clock_getres(c.precise_clock ? CLOCK_REALTIME : CLOCK_REALTIME_COARSE, &res);
  h.clock_resolution_ns = static_cast<std::uint32_t>(res.tv_sec * 1000000000L + res.tv_nsec);
  auto copy_bounded = [](char* dst, std::size_t cap, std::string_view src) {
    const std::size_t n = std::min(cap - 1, src.size());
    std::memcpy(dst, src.data(), n);
    dst[n] = '\0';
  };
  copy_bounded(h.stream_name, sizeof h.stream_name, c.name);
  copy_bounded(h.component, sizeof h.component, c.options.component);
  {
    std::lock_guard<std::mutex> lock(g_process_mutex);
    copy_bounded(h.sdk, sizeof h.sdk, sdk_name());
  }
  h.kind = static_cast<std::uint16_t>(c.options.kind);
  h.declared_dtype = static_cast<std::uint16_t>(c.options.dtype);
  h.declared_ndim = static_cast<std::uint32_t>(c.declared_shape.size());
  for (std::size_t i = 0; i < c.declared_shape.size(); ++i) h.declared_shape[i] = c.declared_shape[i];
  h.feature_count = static_cast<std::uint32_t>(c.feature_names.size());
  h.sampling_budget = c.options.sampling_budget;
}

void write_schema(StreamCore& c, const SegmentPlan& p) {
  std::uint8_t* region = c.base + p.layout.schema_offset;
  auto* schema = reinterpret_cast<SchemaHeader*>(region);
  schema->feature_count = static_cast<std::uint32_t>(c.feature_names.size());
  schema->strings_bytes = static_cast<std::uint32_t>(p.strings_bytes);
  auto* refs = reinterpret_cast<NameRef*>(schema + 1);
  auto* text = reinterpret_cast<char*>(refs + c.feature_names.size());
  std::uint32_t off = 0;
  for (std::size_t i = 0; i < c.feature_names.size(); ++i) {
    refs[i].offset = off;
    refs[i].length = static_cast<std::uint32_t>(c.feature_names[i].size());
    std::memcpy(text + off, c.feature_names[i].data(), c.feature_names[i].size());
    off += refs[i].length;
  }
  if (p.artifacts_bytes > 0) {
    char* out = reinterpret_cast<char*>(region + p.artifacts_at);
    for (const auto& a : c.options.artifacts) {
      std::memcpy(out, a.data(), a.size());
      out[a.size()] = '\0';
      out += a.size() + 1;
    }
    c.header->artifacts_offset = static_cast<std::uint32_t>(p.artifacts_at);
    c.header->artifacts_bytes = static_cast<std::uint32_t>(p.artifacts_bytes);
  }
  const std::string& labels = c.options.labels_stream;
  if (!labels.empty()) {
    std::memcpy(region + p.labels_stream_at, labels.data(), labels.size());
    c.header->labels_stream_offset = static_cast<std::uint32_t>(p.labels_stream_at);
    c.header->labels_stream_bytes = static_cast<std::uint32_t>(labels.size());
  }
  c.header->task = static_cast<std::uint32_t>(c.options.task);
}

void init_writers(StreamCore& c, const SegmentPlan& p) {
  c.lane_count = c.options.lanes;
  c.writers.assign(c.lane_count, LaneWriter{});
  for (std::uint32_t i = 0; i < c.lane_count; ++i) {
    std::uint8_t* lane = c.base + p.layout.lanes_offset + std::uint64_t{i} * p.layout.lane_stride;
    LaneWriter& w = c.writers[i];
    w.header = reinterpret_cast<LaneHeader*>(lane);
    w.index = reinterpret_cast<IndexEntry*>(lane + p.layout.index_offset);
    w.data = lane + p.layout.data_offset;
    w.data_mask = p.data_bytes - 1;
    w.index_mask = p.index_entries - 1;
    w.max_record = p.data_bytes / 2;
  }
}

// Faults a reserved range into the page tables now, so that writes never take a page fault.
// Best effort: the pages are reserved, so a failure only means later (harmless) minor faults.
void populate(void* p, std::size_t n) noexcept {
#ifdef MADV_POPULATE_WRITE
  (void)::madvise(p, n, MADV_POPULATE_WRITE);
#else
  (void)p;
  (void)n;
#endif
}

}  // namespace

bool StreamCore::create_segment() noexcept {
  try {
    const SegmentPlan plan = plan_segment(*this);
    std::string file;  // the name; empty while the file is unnamed
    int f = create_unnamed_file(*this);
    const bool unnamed = f >= 0;
    if (!unnamed) f = create_named_file(*this, file);
    if (f < 0) return false;
    auto give_up = [&] {
      const bool mapped = fd == f;  // then unmap() closes it
      unmap();
      if (!mapped) ::close(f);
      if (!file.empty()) ::unlink(file.c_str());
      path.clear();
      return false;
    };
    const std::string& where = unnamed ? options.shm_dir : file;
    if (!set_access(*this, f, where) || !size_and_reserve(*this, f, where, plan)) return give_up();
    void* p = ::mmap(nullptr, plan.layout.segment_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    if (p == MAP_FAILED) {
      say(*this, "cannot map", where, errno);
      return give_up();
    }
    base = static_cast<std::uint8_t*>(p);
    mapped_bytes = plan.layout.segment_bytes;
    fd = f;
    path = file;
    header = reinterpret_cast<SegmentHeader*>(base);
    control = reinterpret_cast<ControlBlock*>(base + plan.layout.control_offset);
    {
      std::lock_guard<std::mutex> lock(g_process_mutex);
      guard_mapping(base, mapped_bytes, this);
    }
    write_header(*this, plan);
    write_schema(*this, plan);
    init_writers(*this, plan);
    writers[0].backed = true;
    populate(writers[0].index, plan.layout.lane_stride - plan.layout.index_offset);
    aref(header->state).store(static_cast<std::uint32_t>(SegmentState::ready), std::memory_order_relaxed);
    aref(header->magic).store(kSegmentMagic, std::memory_order_release);
    // Complete and mapped: only now does the segment get a name an agent can see.
    if (unnamed) {
      if (!publish(*this, f, file)) return give_up();
      path = file;
    }
    return true;
  } catch (...) {  // std::bad_alloc of a path or the writers
    unmap();
    if (!path.empty()) ::unlink(path.c_str());
    path.clear();
    return false;
  }
}

// A lane's index and data pages, reserved when the lane is first claimed; with the lane claimed.
bool StreamCore::reserve_lane(LaneWriter& w, std::uint32_t lane) noexcept {
  const std::uint64_t begin = static_cast<std::uint64_t>(reinterpret_cast<std::uint8_t*>(w.index) - base);
  const std::uint64_t end = header->lanes_offset + std::uint64_t{lane + 1} * header->lane_stride;
  const int err = reserve(fd, begin, end - begin);
  if (err != 0) {
    if (!fresh_lanes_exhausted.exchange(true)) {
      std::fprintf(stderr, "mltap: stream '%s': cannot reserve lane %u of %s: %s; threads beyond "
                   "the %u lanes in use count their rows as rows_no_lane\n",
                   name.c_str(), lane, path.c_str(), std::strerror(err), lane);
    }
    return false;
  }
  populate(w.index, end - begin);
  aref(w.backed).store(true, std::memory_order_relaxed);  // read unclaimed by claim_lane
  return true;
}

void StreamCore::unmap() noexcept {
  if (base) {
    {
      std::lock_guard<std::mutex> lock(g_process_mutex);
      unguard_mapping(base);
    }
    ::munmap(base, mapped_bytes);
  }
  if (fd >= 0) ::close(fd);
  fd = -1;
  base = nullptr;
  header = nullptr;
  control = nullptr;
  for (auto& slot : recent) slot.store(nullptr, std::memory_order_relaxed);
  writers.clear();
}

void StreamCore::close() noexcept {
  stop_flag_thread();
  if (!base) return;
  if (!ring_lost.load(std::memory_order_relaxed)) {
    aref(header->state).store(static_cast<std::uint32_t>(SegmentState::closed),
                              std::memory_order_release);
  }
  // A present agent drains the ring and removes the file; without one nobody would.
  if (!agent_present(options.shm_dir, options.ns)) ::unlink(path.c_str());
  unmap();
}

bool agent_present(const std::string& dir, const std::string& ns) noexcept {
  try {
    const std::string presence = dir + "/" + naming::agent_presence_file_name(ns);
    struct stat st {};
    if (::stat(presence.c_str(), &st) != 0) return false;
    const std::uint64_t mtime = static_cast<std::uint64_t>(st.st_mtim.tv_sec) * 1000000000ull +
                                static_cast<std::uint64_t>(st.st_mtim.tv_nsec);
    return now_ns(true) < mtime + 5'000'000'000ull;  // the agent touches it every second
  } catch (...) {
    return false;
  }
}

namespace {

// Whether the segment open as `fd` (regular, ours) was left by a dead producer or closed:
// judged from its header, read with pread (a truncated file cannot fault us).
bool segment_is_finished(int fd, std::uint32_t name_pid, std::uint64_t my_pid_ns) {
  SegmentHeader h{};
  if (::pread(fd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h)) return false;
  // Half-created (no magic yet) or written by another user's process: not ours to judge.
  if (h.magic != kSegmentMagic || h.producer_uid != ::getuid()) return false;
  if (h.state == static_cast<std::uint32_t>(SegmentState::closed)) return true;
  // Liveness is known only within our pid namespace, and only for the pid the name says.
  if (h.pid_ns_inode == 0 || h.pid_ns_inode != my_pid_ns || h.producer_pid != name_pid) return false;
  const auto ticks = naming::process_start_ticks(h.producer_pid);
  return !ticks || *ticks != h.producer_start_ticks;
}

}  // namespace

std::size_t remove_dead_segments(const std::string& dir, const std::string& ns) noexcept {
  std::size_t removed = 0;
  try {
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return 0;
    DIR* d = ::fdopendir(dfd);
    if (!d) {
      ::close(dfd);
      return 0;
    }
    const uid_t uid = ::getuid();
    const std::uint64_t my_pid_ns = naming::pid_namespace_inode();
    const std::string prefix = naming::segment_prefix(ns);
    while (dirent* de = ::readdir(d)) {
      const std::string_view name = de->d_name;
      if (!naming::is_segment_file_name(ns, name)) continue;
      // Only regular files of this user: never a symlink, never another user's file.
      struct stat st {};
      if (::fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
          st.st_uid != uid) {
        continue;
      }
      const int fd = ::openat(dfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
      if (fd < 0) continue;
      struct stat fst {};
      const std::string_view rest = name.substr(prefix.size());
      const std::uint32_t name_pid =
          static_cast<std::uint32_t>(std::strtoul(std::string(rest.substr(0, rest.find('.'))).c_str(), nullptr, 10));
      if (::fstat(fd, &fst) == 0 && S_ISREG(fst.st_mode) && fst.st_uid == uid &&
          fst.st_dev == st.st_dev && fst.st_ino == st.st_ino &&
          segment_is_finished(fd, name_pid, my_pid_ns)) {
        // The name must still be the file we judged before it goes.
        struct stat again {};
        if (::fstatat(dfd, de->d_name, &again, AT_SYMLINK_NOFOLLOW) == 0 &&
            again.st_dev == fst.st_dev && again.st_ino == fst.st_ino &&
            ::unlinkat(dfd, de->d_name, 0) == 0) {
          ++removed;
        }
      }
      ::close(fd);
    }
    ::closedir(d);
  } catch (...) {  // std::bad_alloc: leave the rest to the next stream or an agent
  }
  return removed;
}

}  // namespace mltap::detail
