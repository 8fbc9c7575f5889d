// Producer side of the ring (see shm/FORMAT.md). The hot path is Stream::write_tensor: a
// thread-local lane lookup, a coarse clock read, the sampling decision, and a copy into the
// lane's ring published with the seqlock-style protocol of FORMAT.md.
#include "mltap/stream.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "mltap/naming.hpp"

namespace mltap {
namespace detail {
namespace {

using namespace mltap::format;

constexpr std::uint64_t kKeepAll = std::numeric_limits<std::uint64_t>::max();
constexpr unsigned kWindowShift = 28;  // sampling windows of 2^28 ns (~268 ms)
constexpr double kWindowSeconds = static_cast<double>(1ull << kWindowShift) / 1e9;

template <class T>
std::atomic_ref<T> aref(T& v) noexcept {
  return std::atomic_ref<T>(v);
}

// splitmix64 finalizer: a trace id's keep/drop decision is this hash against a threshold, so
// that every component with the same sampling rate keeps the same trace ids, and components with
// lower rates keep a subset of those kept by components with higher rates.
constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

std::atomic<std::uint64_t> g_fork_generation{0};
std::mutex g_registry_mutex;
std::string g_sdk = "cpp/0.1.0";

std::uint32_t current_tid() noexcept {
  thread_local std::uint32_t tid = static_cast<std::uint32_t>(::syscall(SYS_gettid));
  return tid;
}

void atfork_prepare() { g_registry_mutex.lock(); }
void atfork_parent() { g_registry_mutex.unlock(); }
void reset_streams_in_child();
void atfork_child() {
  g_registry_mutex.unlock();
  g_fork_generation.fetch_add(1, std::memory_order_relaxed);
  reset_streams_in_child();
}

struct AtforkInstaller {
  AtforkInstaller() { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }
};

std::string program_name() {
  std::ifstream in("/proc/self/comm");
  std::string s;
  std::getline(in, s);
  std::string out;
  for (char c : s) {
    if (naming::valid_component(std::string(1, c))) out += c;
    else out += '_';
  }
  return out.empty() ? std::string("unknown") : out.substr(0, 63);
}

std::uint64_t now_ns(bool precise) noexcept {
  timespec ts;
  clock_gettime(precise ? CLOCK_REALTIME : CLOCK_REALTIME_COARSE, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

void copy_bounded(char* dst, std::size_t cap, std::string_view src) noexcept {
  const std::size_t n = std::min(cap - 1, src.size());
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

}  // namespace

// Process-private state of one lane, touched only by the thread that owns the lane. Aligned to
// a cache line: neighbouring lanes' writers in `writers` must not share one (false sharing made
// two threads' writes ~3.5x slower than one thread's).
struct alignas(64) LaneWriter {
  LaneHeader* header = nullptr;
  IndexEntry* index = nullptr;
  std::uint8_t* data = nullptr;
  std::uint64_t seq = 0;
  std::uint64_t pos = 0;
  std::uint64_t rows_committed = 0;
  std::uint64_t sample_acc = 0;  // fixed-point accumulator for rows without trace ids
  std::uint64_t window_id = 0;   // this lane's rows in the current sampling window
  std::uint64_t window_rows = 0;
  std::uint64_t next_estimate_at = 0;  // re-estimate the rate at budget, 2x, 4x, ... rows
  // The last accepted row description: an identical one skips revalidation.
  DType valid_dtype = DType::invalid;
  std::uint32_t valid_ndim = 0;
  std::uint32_t valid_dims[kMaxRowDims] = {};
  std::uint64_t valid_row_bytes = 0;
  // While sampling (high rates), the clock is read on every 8th write only; a kept row always
  // reads it for its timestamp.
  std::uint64_t last_now = 0;
  std::uint32_t clock_skip = 0;
};

struct StreamCore {
  // Identity for the thread-local lane cache: `slot` indexes the cache, `serial` is never reused.
  std::uint32_t slot = 0;
  std::uint64_t serial = 0;

  std::string name;
  StreamOptions options;
  std::vector<std::string> feature_names;
  std::vector<std::uint32_t> declared_shape;
  std::uint64_t fork_generation = 0;
  bool precise_clock = false;

  // Mapping (null without a ring).
  std::uint8_t* base = nullptr;
  std::uint64_t mapped_bytes = 0;
  std::string path;
  SegmentHeader* header = nullptr;
  ControlBlock* control = nullptr;
  std::uint32_t lane_count = 0;
  std::uint64_t lane_stride = 0;
  std::uint64_t lanes_offset = 0;
  std::uint64_t index_offset = 0;
  std::uint64_t data_offset = 0;
  std::uint64_t data_mask = 0;
  std::uint64_t index_mask = 0;
  std::uint64_t max_record = 0;
  std::vector<LaneWriter> writers;
  std::atomic<std::uint32_t> lanes_in_use_hint{0};  // highest claimed lane + 1

  // Sampling, shared by the stream's threads. Read-mostly: changed once per window.
  std::atomic<std::uint64_t> window_id{0};
  std::atomic<std::uint64_t> window_rows_base{0};
  std::atomic<std::uint64_t> keep_threshold{kKeepAll};
  std::atomic<std::uint32_t> keep_fraction32{0};  // keep share * 2^32 when below 1

  // Rows lost before reaching any lane.
  std::atomic<std::uint64_t> rows_no_ring{0};
  std::atomic<std::uint64_t> rows_no_lane{0};
  std::atomic<std::uint64_t> rows_written_unlaned{0};

  // Flag callbacks.
  std::mutex flag_mutex;
  std::condition_variable flag_cv;
  std::map<std::string, std::pair<std::uint32_t, std::vector<std::function<void(std::uint32_t)>>>>
      flag_callbacks;
  std::thread flag_thread;
  bool flag_stop = false;

  bool create_segment() noexcept;
  void unmap() noexcept;
  LaneWriter* claim_lane() noexcept;
  LaneWriter* lane_for_this_thread() noexcept;
  LaneWriter* claim_for_this_thread() noexcept;
  void reopen_after_fork() noexcept;
  void roll_window(std::uint64_t id, std::uint64_t now) noexcept;
  std::atomic<std::uint64_t> window_started_ns{0};
  void estimate_mid_window(std::uint64_t id, std::uint64_t now) noexcept;
  void set_keep_share(double keep, std::uint64_t id) noexcept;
  std::uint64_t allowed_per_window = 0;  // budget x window length, 0 = unlimited
  std::uint64_t sum_rows_written() const noexcept;
  std::uint32_t read_flag(std::string_view name) const noexcept;
  void start_flag_thread();  // with flag_mutex held
  void forget_parent_threads() noexcept;
  void close() noexcept;
};

namespace {

// Registry of live streams, for the thread-exit lane release and slot reuse.
struct Registry {
  std::vector<StreamCore*> slots;
  std::vector<std::uint32_t> free_slots;
  std::uint64_t next_serial = 1;
};
Registry& registry() {
  static AtforkInstaller installer;
  static Registry* r = new Registry();  // leaked on purpose: used by thread-exit destructors
  return *r;
}

// Per-thread cache: slot -> (serial, lane writer). Releases its lanes when the thread exits.
struct ThreadLanes {
  struct Entry {
    std::uint64_t serial = 0;
    LaneWriter* writer = nullptr;
  };
  std::vector<Entry> entries;
  ~ThreadLanes() {
    std::lock_guard<std::mutex> lock(g_registry_mutex);
    Registry& r = registry();
    for (std::size_t slot = 0; slot < entries.size(); ++slot) {
      const Entry& e = entries[slot];
      if (e.writer == nullptr || slot >= r.slots.size()) continue;
      StreamCore* core = r.slots[slot];
      if (core && core->serial == e.serial && core->base) {
        aref(e.writer->header->owner_tid).store(0, std::memory_order_release);
      }
    }
  }
};
thread_local ThreadLanes t_lanes;

}  // namespace

namespace {
void reset_streams_in_child() {
  for (StreamCore* core : registry().slots) {
    if (core) core->forget_parent_threads();
  }
}
}  // namespace

bool StreamCore::create_segment() noexcept {
  const std::uint64_t data_bytes = options.ring_bytes;
  const std::uint32_t index_entries =
      static_cast<std::uint32_t>(std::max<std::uint64_t>(1024, data_bytes / 128));
  // Schema region: header, name refs, names.
  std::uint64_t strings = 0;
  for (const auto& f : feature_names) strings += f.size();
  std::uint64_t artifact_bytes = 0;
  for (const auto& a : options.artifacts) artifact_bytes += a.size() + 1;
  const std::uint64_t artifacts_at =
      sizeof(SchemaHeader) + feature_names.size() * sizeof(NameRef) + strings;
  const std::uint64_t schema_needed = artifacts_at + artifact_bytes;
  const Layout layout = compute_layout(schema_needed, options.lanes, index_entries, data_bytes);

  const std::string ns = options.ns;
  const std::string dir = options.shm_dir;
  const std::uint32_t pid = static_cast<std::uint32_t>(::getpid());
  static std::atomic<std::uint64_t> counter{0};
  int fd = -1;
  std::string file;
  for (int attempt = 0; attempt < 64 && fd < 0; ++attempt) {
    file = dir + "/" + naming::segment_file_name(ns, pid, counter.fetch_add(1));
    fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) {
    std::fprintf(stderr, "mltap: stream '%s': cannot create ring in %s: %s; writes are counted and dropped\n",
                 name.c_str(), dir.c_str(), std::strerror(errno));
    return false;
  }
  mode_t mode = 0600;
  std::string group = options.shm_group;
  if (group.empty()) {
    if (const char* g = std::getenv("MLTAP_SHM_GROUP")) group = g;
  }
  if (!group.empty()) {
    struct group* gr = ::getgrnam(group.c_str());
    if (gr && ::fchown(fd, static_cast<uid_t>(-1), gr->gr_gid) == 0) {
      mode = 0660;
    } else {
      std::fprintf(stderr, "mltap: stream '%s': cannot give group '%s' access; ring stays 0600\n",
                   name.c_str(), group.c_str());
    }
  }
  if (::fchmod(fd, mode) != 0 || ::ftruncate(fd, static_cast<off_t>(layout.segment_bytes)) != 0) {
    std::fprintf(stderr, "mltap: stream '%s': cannot size ring %s: %s; writes are counted and dropped\n",
                 name.c_str(), file.c_str(), std::strerror(errno));
    ::close(fd);
    ::unlink(file.c_str());
    return false;
  }
  void* p = ::mmap(nullptr, layout.segment_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    std::fprintf(stderr, "mltap: stream '%s': cannot map ring %s: %s; writes are counted and dropped\n",
                 name.c_str(), file.c_str(), std::strerror(errno));
    ::unlink(file.c_str());
    return false;
  }
  base = static_cast<std::uint8_t*>(p);
  mapped_bytes = layout.segment_bytes;
  path = file;
  header = reinterpret_cast<SegmentHeader*>(base);
  control = reinterpret_cast<ControlBlock*>(base + layout.control_offset);

  SegmentHeader& h = *header;  // zero-filled by ftruncate
  h.abi_major = kAbiMajor;
  h.abi_minor = kAbiMinor;
  h.endian_marker = kEndianMarker;
  h.header_bytes = sizeof(SegmentHeader);
  h.word_bits = 64;
  h.segment_bytes = layout.segment_bytes;
  h.control_offset = layout.control_offset;
  h.schema_offset = layout.schema_offset;
  h.schema_bytes = layout.schema_bytes;
  h.lanes_offset = layout.lanes_offset;
  h.lane_stride = layout.lane_stride;
  h.lane_count = options.lanes;
  h.index_entries = index_entries;
  h.index_offset = layout.index_offset;
  h.data_offset = layout.data_offset;
  h.data_bytes = data_bytes;
  h.max_record_bytes = data_bytes / 2;
  h.producer_pid = pid;
  h.producer_uid = static_cast<std::uint32_t>(::getuid());
  h.producer_start_ticks = naming::process_start_ticks(pid).value_or(0);
  h.pid_ns_inode = naming::pid_namespace_inode();
  h.created_unix_ns = now_ns(true);
  h.clock = static_cast<std::uint32_t>(options.clock);
  timespec res{};
  clock_getres(precise_clock ? CLOCK_REALTIME : CLOCK_REALTIME_COARSE, &res);
  h.clock_resolution_ns = static_cast<std::uint32_t>(res.tv_sec * 1000000000L + res.tv_nsec);
  copy_bounded(h.stream_name, sizeof h.stream_name, name);
  copy_bounded(h.component, sizeof h.component, options.component);
  copy_bounded(h.sdk, sizeof h.sdk, g_sdk);
  h.kind = static_cast<std::uint16_t>(options.kind);
  h.declared_dtype = static_cast<std::uint16_t>(options.dtype);
  h.declared_ndim = static_cast<std::uint32_t>(declared_shape.size());
  for (std::size_t i = 0; i < declared_shape.size(); ++i) h.declared_shape[i] = declared_shape[i];
  h.feature_count = static_cast<std::uint32_t>(feature_names.size());
  h.sampling_budget = options.sampling_budget;

  auto* schema = reinterpret_cast<SchemaHeader*>(base + layout.schema_offset);
  schema->feature_count = static_cast<std::uint32_t>(feature_names.size());
  schema->strings_bytes = static_cast<std::uint32_t>(strings);
  auto* refs = reinterpret_cast<NameRef*>(schema + 1);
  auto* text = reinterpret_cast<char*>(refs + feature_names.size());
  std::uint32_t off = 0;
  for (std::size_t i = 0; i < feature_names.size(); ++i) {
    refs[i].offset = off;
    refs[i].length = static_cast<std::uint32_t>(feature_names[i].size());
    std::memcpy(text + off, feature_names[i].data(), feature_names[i].size());
    off += refs[i].length;
  }
  if (artifact_bytes > 0) {
    char* out = reinterpret_cast<char*>(base + layout.schema_offset + artifacts_at);
    for (const auto& a : options.artifacts) {
      std::memcpy(out, a.data(), a.size());
      out[a.size()] = '\0';
      out += a.size() + 1;
    }
    h.artifacts_offset = static_cast<std::uint32_t>(artifacts_at);
    h.artifacts_bytes = static_cast<std::uint32_t>(artifact_bytes);
  }

  lane_count = options.lanes;
  lane_stride = layout.lane_stride;
  lanes_offset = layout.lanes_offset;
  index_offset = layout.index_offset;
  data_offset = layout.data_offset;
  data_mask = data_bytes - 1;
  index_mask = index_entries - 1;
  max_record = data_bytes / 2;
  writers.assign(lane_count, LaneWriter{});
  for (std::uint32_t i = 0; i < lane_count; ++i) {
    std::uint8_t* lane = base + lanes_offset + std::uint64_t{i} * lane_stride;
    writers[i].header = reinterpret_cast<LaneHeader*>(lane);
    writers[i].index = reinterpret_cast<IndexEntry*>(lane + index_offset);
    writers[i].data = lane + data_offset;
  }
  aref(h.state).store(static_cast<std::uint32_t>(SegmentState::ready), std::memory_order_relaxed);
  aref(h.magic).store(kSegmentMagic, std::memory_order_release);
  return true;
}

void StreamCore::unmap() noexcept {
  if (base) ::munmap(base, mapped_bytes);
  base = nullptr;
  header = nullptr;
  control = nullptr;
  writers.clear();
}

LaneWriter* StreamCore::claim_lane() noexcept {
  const std::uint32_t tid = current_tid();
  auto try_claim = [&](std::uint32_t i, std::uint32_t expected) -> LaneWriter* {
    LaneWriter& w = writers[i];
    if (!aref(w.header->owner_tid).compare_exchange_strong(expected, tid,
                                                            std::memory_order_acquire)) {
      return nullptr;
    }
    // Continue the lane where its previous owner stopped.
    w.seq = aref(w.header->commit_seq).load(std::memory_order_relaxed);
    w.pos = aref(w.header->next_pos).load(std::memory_order_relaxed);
    w.rows_committed = aref(w.header->rows_committed).load(std::memory_order_relaxed);
    aref(w.header->claims).fetch_add(1, std::memory_order_relaxed);
    if (w.seq == 0) {
      // First use: fault the lane's pages in now so that writes never take page faults. One
      // madvise populates them without a fault per page (Linux 5.14+); else touch every page.
      auto populate = [](void* p, std::size_t n) noexcept {
#ifdef MADV_POPULATE_WRITE
        if (::madvise(p, n, MADV_POPULATE_WRITE) == 0) return;
#endif
        std::memset(p, 0, n);
      };
      populate(w.index, (index_mask + 1) * sizeof(IndexEntry));
      populate(w.data, data_mask + 1);
    }
    std::uint32_t hint = lanes_in_use_hint.load(std::memory_order_relaxed);
    while (hint < i + 1 &&
           !lanes_in_use_hint.compare_exchange_weak(hint, i + 1, std::memory_order_relaxed)) {
    }
    return &w;
  };
  for (std::uint32_t i = 0; i < lane_count; ++i) {
    if (LaneWriter* w = try_claim(i, 0)) return w;
  }
  // Every lane is owned: take over lanes whose owner thread no longer exists (a thread that
  // ended without running its thread-local destructors).
  for (std::uint32_t i = 0; i < lane_count; ++i) {
    const std::uint32_t owner = aref(writers[i].header->owner_tid).load(std::memory_order_relaxed);
    if (owner == 0 || owner == tid) continue;
    const std::string task = "/proc/self/task/" + std::to_string(owner);
    if (::access(task.c_str(), F_OK) != 0) {
      if (LaneWriter* w = try_claim(i, owner)) return w;
    }
  }
  return nullptr;
}

// Every write asks for its lane: the cached case is inlined into write_tensor (a call and six
// register saves were ~19 of the ~200 instructions of a sampled-out write); claiming is not.
inline LaneWriter* StreamCore::lane_for_this_thread() noexcept {
  auto& entries = t_lanes.entries;
  if (slot < entries.size() && entries[slot].serial == serial) [[likely]] return entries[slot].writer;
  return claim_for_this_thread();
}

__attribute__((noinline)) LaneWriter* StreamCore::claim_for_this_thread() noexcept {
  auto& entries = t_lanes.entries;
  if (!base) return nullptr;
  LaneWriter* w = claim_lane();
  if (!w) return nullptr;  // retried on the next write
  try {
    if (entries.size() <= slot) entries.resize(slot + 1);
  } catch (...) {
    aref(w->header->owner_tid).store(0, std::memory_order_release);
    return nullptr;
  }
  entries[slot] = {serial, w};
  return w;
}

void StreamCore::reopen_after_fork() noexcept {
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  if (fork_generation == g_fork_generation.load(std::memory_order_relaxed)) return;
  fork_generation = g_fork_generation.load(std::memory_order_relaxed);
  // The inherited mapping is the parent's ring: the child writes its own.
  unmap();
  serial = registry().next_serial++;  // invalidates thread-local lane caches
  window_id.store(0, std::memory_order_relaxed);
  window_rows_base.store(0, std::memory_order_relaxed);
  if (!create_segment()) unmap();
  std::lock_guard<std::mutex> flags(flag_mutex);
  if (!flag_callbacks.empty() && !flag_thread.joinable()) {
    try {
      start_flag_thread();
    } catch (...) {
      std::fprintf(stderr, "mltap: stream '%s': cannot restart flag callbacks after fork\n", name.c_str());
    }
  }
}

std::uint64_t StreamCore::sum_rows_written() const noexcept {
  std::uint64_t sum = rows_written_unlaned.load(std::memory_order_relaxed);
  const std::uint32_t n = std::min(lanes_in_use_hint.load(std::memory_order_relaxed), lane_count);
  for (std::uint32_t i = 0; i < n && i < writers.size(); ++i) {
    sum += aref(writers[i].header->rows_written).load(std::memory_order_relaxed);
  }
  return sum;
}

// Once per window, by whichever thread sees the new window first: estimate the rate from the
// exact write counters and set the keep share for the next window.
void StreamCore::roll_window(std::uint64_t id, std::uint64_t now) noexcept {
  std::uint64_t old = window_id.load(std::memory_order_relaxed);
  if (old == id || !window_id.compare_exchange_strong(old, id, std::memory_order_acq_rel)) return;
  const std::uint64_t total = sum_rows_written();
  const std::uint64_t base_rows = window_rows_base.exchange(total, std::memory_order_relaxed);
  window_started_ns.store(now, std::memory_order_relaxed);
  double keep = 1.0;
  if (options.sampling_budget != 0 && old != 0 && id > old) {
    const double windows = static_cast<double>(id - old);
    const double per_window = static_cast<double>(total - base_rows) / windows;
    const double allowed = options.sampling_budget * kWindowSeconds;
    if (per_window > allowed) keep = allowed / per_window;
  }
  set_keep_share(keep, id);
}

// A lane passed the whole stream's budget within one window (a burst, or the first window, for
// which no rate is known yet): estimate the rate from the window so far instead of waiting.
void StreamCore::estimate_mid_window(std::uint64_t id, std::uint64_t now) noexcept {
  const std::uint64_t total = sum_rows_written();
  const std::uint64_t base_rows = window_rows_base.load(std::memory_order_relaxed);
  // The window began at its boundary, or later at the stream's first write.
  const std::uint64_t start = std::max(id << kWindowShift, window_started_ns.load(std::memory_order_relaxed));
  const double elapsed = static_cast<double>(std::max<std::uint64_t>(now > start ? now - start : 0, 4'000'000));
  const double projected = static_cast<double>(total - base_rows) * static_cast<double>(1ull << kWindowShift) / elapsed;
  const double allowed = options.sampling_budget * kWindowSeconds;
  if (projected > allowed) set_keep_share(allowed / projected, id);
}

void StreamCore::set_keep_share(double keep, std::uint64_t id) noexcept {
  if (control && keep < 1.0) {
    const std::uint32_t boost =
        aref(control->sampling_boost_permille).load(std::memory_order_relaxed);
    const std::uint64_t until =
        aref(control->sampling_boost_until_unix_ns).load(std::memory_order_relaxed);
    if (boost > 0 && boost <= 1000 && until > (id << kWindowShift)) {
      keep = std::max(keep, boost / 1000.0);
    }
  }
  if (keep >= 1.0) {
    keep_threshold.store(kKeepAll, std::memory_order_relaxed);
  } else {
    keep_fraction32.store(static_cast<std::uint32_t>(keep * 4294967296.0),
                          std::memory_order_relaxed);
    keep_threshold.store(static_cast<std::uint64_t>(keep * 18446744073709551615.0),
                         std::memory_order_relaxed);
  }
}

std::uint32_t StreamCore::read_flag(std::string_view flag) const noexcept {
  if (!control || flag.empty() || flag.size() >= kFlagNameMax) return 0;
  for (int attempt = 0; attempt < 4; ++attempt) {
    const std::uint64_t g1 = aref(control->generation).load(std::memory_order_acquire);
    if (g1 & 1) continue;  // the agent is mid-update
    std::uint32_t value = 0;
    for (std::uint32_t i = 0; i < kControlFlags; ++i) {
      char name_copy[kFlagNameMax];
      std::memcpy(name_copy, control->flags[i].name, kFlagNameMax);
      if (name_copy[kFlagNameMax - 1] != '\0') continue;  // untrusted: not terminated
      if (std::strlen(name_copy) == flag.size() &&
          std::memcmp(name_copy, flag.data(), flag.size()) == 0) {
        value = aref(control->flags[i].value).load(std::memory_order_relaxed);
        break;
      }
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if (aref(control->generation).load(std::memory_order_relaxed) == g1) return value;
  }
  return 0;
}

void StreamCore::start_flag_thread() {
  flag_stop = false;
  flag_thread = std::thread([this] {
    std::unique_lock<std::mutex> lk(flag_mutex);
    while (!flag_stop) {
      flag_cv.wait_for(lk, std::chrono::milliseconds(100));
      if (flag_stop) break;
      for (auto& [flag, entry] : flag_callbacks) {
        const std::uint32_t v = read_flag(flag);
        if (v == entry.first) continue;
        entry.first = v;
        auto callbacks = entry.second;
        lk.unlock();
        for (auto& cb : callbacks) {
          try {
            cb(v);
          } catch (...) {
            std::fprintf(stderr, "mltap: flag callback for '%s' threw; ignored\n", flag.c_str());
          }
        }
        lk.lock();
        if (flag_stop) break;
      }
    }
  });
}

// In a forked child the parent's flag thread does not exist and its mutex may be held by it:
// forget the handle (joining or destroying it would be undefined) and start afresh.
void StreamCore::forget_parent_threads() noexcept {
  if (flag_thread.joinable()) {
    new std::thread(std::move(flag_thread));  // leaked on purpose: the thread is not ours
  }
  new (&flag_mutex) std::mutex();
  new (&flag_cv) std::condition_variable();
  flag_stop = false;
}

void StreamCore::close() noexcept {
  if (flag_thread.joinable()) {
    {
      std::lock_guard<std::mutex> lock(flag_mutex);
      flag_stop = true;
    }
    flag_cv.notify_all();
    flag_thread.join();
  }
  if (!base) return;
  aref(header->state).store(static_cast<std::uint32_t>(SegmentState::closed),
                            std::memory_order_release);
  // A present agent drains the ring and removes the file; without one nobody would. The agent
  // touches its presence file every second.
  const std::string presence = options.shm_dir + "/" + naming::agent_presence_file_name(options.ns);
  struct stat st {};
  const std::uint64_t now = now_ns(true);
  bool agent_present = false;
  if (::stat(presence.c_str(), &st) == 0) {
    const std::uint64_t mtime = static_cast<std::uint64_t>(st.st_mtim.tv_sec) * 1000000000ull +
                                static_cast<std::uint64_t>(st.st_mtim.tv_nsec);
    agent_present = now < mtime + 5'000'000'000ull;
  }
  if (!agent_present) ::unlink(path.c_str());
  unmap();
}

}  // namespace detail

using detail::StreamCore;
using namespace format;

Stream::Stream(std::string_view name, StreamOptions options) : core_(new StreamCore()) {
  if (!naming::valid_stream_name(name)) {
    throw std::invalid_argument("mltap: invalid stream name '" + std::string(name) +
                                "': 1..127 printable ASCII characters without spaces or quotes");
  }
  if (options.component.empty()) options.component = detail::program_name();
  if (!naming::valid_component(options.component)) {
    throw std::invalid_argument("mltap: invalid component '" + options.component + "'");
  }
  if (options.ns.empty()) options.ns = naming::namespace_from_env();
  if (!naming::valid_namespace(options.ns)) {
    throw std::invalid_argument("mltap: invalid namespace '" + options.ns + "': [a-z0-9_-]{1,31}");
  }
  if (options.shm_dir.empty()) options.shm_dir = naming::shm_dir_from_env();
  if (!is_pow2(options.ring_bytes) || options.ring_bytes < (64u << 10) ||
      options.ring_bytes > (1ull << 30)) {
    throw std::invalid_argument("mltap: ring_bytes must be a power of two in [64 KiB, 1 GiB]");
  }
  if (options.lanes == 0 || options.lanes > kMaxLanes) {
    throw std::invalid_argument("mltap: lanes must be 1..256");
  }
  if (static_cast<std::uint16_t>(options.kind) == 0 ||
      static_cast<std::uint16_t>(options.kind) > kStreamKindMax) {
    throw std::invalid_argument("mltap: invalid stream kind");
  }
  if (options.dtype != DType::invalid && !dtype_valid(static_cast<std::uint16_t>(options.dtype))) {
    throw std::invalid_argument("mltap: invalid dtype");
  }
  if (options.features.size() > kMaxFeatures) {
    throw std::invalid_argument("mltap: at most 65536 features");
  }
  for (const auto& f : options.features) {
    if (!naming::valid_label_text(f, 127)) {
      throw std::invalid_argument("mltap: invalid feature name '" + f +
                                  "': 1..127 printable ASCII characters without quotes or backslash");
    }
  }
  if (options.artifacts.size() > kMaxArtifacts) {
    throw std::invalid_argument("mltap: at most 16 artifacts");
  }
  for (const auto& a : options.artifacts) {
    if (!naming::valid_artifact_path(a)) {
      throw std::invalid_argument("mltap: invalid artifact path '" + a +
                                  "': absolute, printable ASCII, no . or .. components, < 1024 bytes");
    }
  }
  if (options.row_shape.size() > kMaxRowDims) {
    throw std::invalid_argument("mltap: row_shape has more than 6 dimensions");
  }
  std::vector<std::uint32_t> shape = options.row_shape;
  if (shape.empty() && !options.features.empty()) {
    shape = {static_cast<std::uint32_t>(options.features.size())};
  }
  if (!options.features.empty()) {
    std::uint64_t elems = 1;
    for (auto d : shape) elems *= d;
    if (elems != options.features.size()) {
      throw std::invalid_argument("mltap: " + std::to_string(options.features.size()) +
                                  " feature names for a row shape of " + std::to_string(elems) +
                                  " values");
    }
  }
  StreamCore& c = *core_;
  c.name = std::string(name);
  c.feature_names = options.features;
  c.declared_shape = shape;
  c.precise_clock = options.clock == ClockKind::realtime;
  c.allowed_per_window =  // at least one row, so that tiny budgets still estimate mid-window
      options.sampling_budget == 0
          ? 0
          : std::max<std::uint64_t>(1, static_cast<std::uint64_t>(options.sampling_budget * detail::kWindowSeconds));
  c.options = std::move(options);
  {
    std::lock_guard<std::mutex> lock(detail::g_registry_mutex);
    auto& r = detail::registry();
    c.serial = r.next_serial++;
    if (!r.free_slots.empty()) {
      c.slot = r.free_slots.back();
      r.free_slots.pop_back();
      r.slots[c.slot] = &c;
    } else {
      c.slot = static_cast<std::uint32_t>(r.slots.size());
      r.slots.push_back(&c);
    }
    c.fork_generation = detail::g_fork_generation.load(std::memory_order_relaxed);
  }
  c.create_segment();
}

Stream::~Stream() {
  if (!core_) return;
  {
    std::lock_guard<std::mutex> lock(detail::g_registry_mutex);
    auto& r = detail::registry();
    r.slots[core_->slot] = nullptr;
    r.free_slots.push_back(core_->slot);
  }
  core_->close();
}

Stream::Stream(Stream&&) noexcept = default;
Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    Stream dying(std::move(*this));
    core_ = std::move(other.core_);
  }
  return *this;
}

WriteResult Stream::write_tensor(const void* data, DType dtype,
                                 std::span<const std::uint32_t> row_shape, std::size_t rows,
                                 std::span<const std::uint64_t> trace_ids) noexcept {
  if (!core_) return WriteResult::dropped;
  StreamCore& c = *core_;
  if (c.fork_generation != detail::g_fork_generation.load(std::memory_order_relaxed)) {
    c.reopen_after_fork();
  }
  detail::LaneWriter* w = c.lane_for_this_thread();
  if (!w) {
    c.rows_written_unlaned.fetch_add(rows, std::memory_order_relaxed);
    if (!c.base) {
      c.rows_no_ring.fetch_add(rows, std::memory_order_relaxed);
    } else {
      c.rows_no_lane.fetch_add(rows, std::memory_order_relaxed);
      detail::aref(c.header->no_lane_rows).fetch_add(rows, std::memory_order_relaxed);
    }
    return WriteResult::dropped;
  }
  LaneHeader& h = *w->header;
  const std::uint64_t written = h.rows_written + rows;
  detail::aref(h.rows_written).store(written, std::memory_order_relaxed);
  if (rows == 0) return WriteResult::written;

  // Validate the caller's description before touching anything else.
  if (data == nullptr || (!trace_ids.empty() && trace_ids.size() != rows) || rows > 0xFFFFFFFFu) {
    detail::aref(h.rows_bad_input).store(h.rows_bad_input + rows, std::memory_order_relaxed);
    return WriteResult::dropped;
  }
  std::uint64_t row_bytes = w->valid_row_bytes;
  bool same_shape = dtype == w->valid_dtype && row_shape.size() == w->valid_ndim;
  for (std::size_t d = 0; same_shape && d < row_shape.size(); ++d) {
    same_shape = row_shape[d] == w->valid_dims[d];
  }
  if (!same_shape) [[unlikely]] {
    const std::uint32_t esize = dtype_size(dtype);
    bool ok = esize != 0 && !row_shape.empty() && row_shape.size() <= kMaxRowDims;
    row_bytes = esize;
    bool too_large = false;
    for (std::uint32_t d : row_shape) {
      if (d == 0) ok = false;
      row_bytes *= d;
      if (row_bytes > c.max_record) {  // also keeps the product from overflowing
        too_large = true;
        row_bytes = c.max_record + 1;
      }
    }
    if (!ok) {
      detail::aref(h.rows_bad_input).store(h.rows_bad_input + rows, std::memory_order_relaxed);
      return WriteResult::dropped;
    }
    if (too_large || row_bytes + 8 + sizeof(RecordHeader) > c.max_record) {
      detail::aref(h.rows_too_large).store(h.rows_too_large + rows, std::memory_order_relaxed);
      return WriteResult::dropped;
    }
    w->valid_dtype = dtype;
    w->valid_ndim = static_cast<std::uint32_t>(row_shape.size());
    std::fill(std::begin(w->valid_dims), std::end(w->valid_dims), 0u);
    std::memcpy(w->valid_dims, row_shape.data(), row_shape.size() * sizeof(std::uint32_t));
    w->valid_row_bytes = row_bytes;
  }
  const std::uint64_t per_row = row_bytes + (trace_ids.empty() ? 0 : 8);

  const bool was_sampling = c.keep_threshold.load(std::memory_order_relaxed) != detail::kKeepAll;
  std::uint64_t now;
  bool now_is_fresh = true;
  if (was_sampling && (++w->clock_skip & 7) != 0) {
    now = w->last_now;
    now_is_fresh = false;
  } else {
    now = detail::now_ns(c.precise_clock);
    w->last_now = now;
  }
  const std::uint64_t window = now >> detail::kWindowShift;
  if (window != c.window_id.load(std::memory_order_relaxed)) c.roll_window(window, now);
  if (c.allowed_per_window != 0) {
    if (w->window_id != window) {
      w->window_id = window;
      w->window_rows = 0;
      w->next_estimate_at = c.allowed_per_window;
    }
    w->window_rows += rows;
    if (w->window_rows > w->next_estimate_at) {
      w->next_estimate_at = w->window_rows * 2;
      c.estimate_mid_window(window, now);
    }
  }
  const std::uint64_t threshold = c.keep_threshold.load(std::memory_order_relaxed);
  const std::uint32_t fraction = c.keep_fraction32.load(std::memory_order_relaxed);
  const bool sampling = threshold != detail::kKeepAll;

  // Sampling decision per row, made before any copy. Without trace ids an accumulator keeps an
  // exact, evenly spaced share; it is replayed from its saved value when copying.
  const std::uint64_t acc_start = w->sample_acc;
  auto keep_row = [&](std::size_t r, std::uint64_t& acc) noexcept -> bool {
    if (!sampling) return true;
    if (!trace_ids.empty()) return detail::mix64(trace_ids[r]) <= threshold;
    const std::uint64_t before = acc;
    acc += fraction;
    return (acc >> 32) != (before >> 32);
  };
  std::size_t kept = rows;
  if (sampling) {
    std::uint64_t acc = acc_start;
    kept = 0;
    for (std::size_t r = 0; r < rows; ++r) kept += keep_row(r, acc) ? 1 : 0;
    w->sample_acc = acc;
    if (kept < rows) {
      detail::aref(h.rows_sampled_out)
          .store(h.rows_sampled_out + (rows - kept), std::memory_order_relaxed);
    }
    if (kept == 0) return WriteResult::sampled_out;
  }
  if (!now_is_fresh) now = w->last_now = detail::now_ns(c.precise_clock);

  const auto* src = static_cast<const std::uint8_t*>(data);
  const std::uint64_t ring = c.data_mask + 1;
  // Most writes fit one record: skip the division that splitting needs.
  const std::uint64_t max_rows_per_record =
      sizeof(RecordHeader) + kept * per_row <= c.max_record
          ? kept
          : (c.max_record - sizeof(RecordHeader)) / per_row;
  std::uint64_t acc = acc_start;
  std::size_t next_row = 0;  // next source row to consider
  std::size_t remaining = kept;
  while (remaining > 0) {
    const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(remaining, max_rows_per_record));
    const std::uint64_t payload = chunk * row_bytes;
    const std::uint64_t tids = trace_ids.empty() ? 0 : chunk * 8;
    const std::uint64_t size = sizeof(RecordHeader) + tids + payload;
    const std::uint64_t aligned = align_up(size, kRecordAlign);
    const std::uint64_t seq = w->seq;
    const std::uint64_t pos = w->pos;

    // Announce the bytes about to be overwritten before writing them (FORMAT.md).
    detail::aref(h.reserve_seq).store(seq + 1, std::memory_order_relaxed);
    detail::aref(h.reserve_pos).store(pos + aligned, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);

    // The header is written in place: 64-aligned in a ring of a multiple of 64 bytes, it never
    // wraps.
    std::uint8_t* const ring_base = w->data;
    std::uint64_t off = pos & c.data_mask;
    RecordHeader& rh = *reinterpret_cast<RecordHeader*>(ring_base + off);
    rh.seq = seq;
    rh.timestamp_ns = now;
    rh.rows = static_cast<std::uint32_t>(chunk);
    rh.payload_bytes = static_cast<std::uint32_t>(payload);
    rh.dtype = static_cast<std::uint16_t>(dtype);
    rh.ndim = static_cast<std::uint8_t>(row_shape.size());
    rh.flags = trace_ids.empty() ? 0 : kRecordHasTraceIds;
    rh.payload_offset = static_cast<std::uint32_t>(sizeof(RecordHeader) + tids);
    std::memcpy(rh.dims, w->valid_dims, sizeof rh.dims);  // the validated shape, zero padded
    rh.reserved[0] = 0;
    rh.reserved[1] = 0;
    off = (off + sizeof(RecordHeader)) & c.data_mask;

    auto put = [&](const void* bytes, std::uint64_t n) noexcept {
      const auto* b = static_cast<const std::uint8_t*>(bytes);
      const std::uint64_t first = std::min(n, ring - off);
      std::memcpy(ring_base + off, b, first);
      if (first < n) std::memcpy(ring_base, b + first, n - first);
      off = (off + n) & c.data_mask;
    };
    if (!sampling) {
      // Nothing sampled out: contiguous copies of the chunk's trace ids and rows.
      if (tids) put(trace_ids.data() + next_row, tids);
      put(src + next_row * row_bytes, payload);
      next_row += chunk;
    } else {
      // Gather the kept rows (trace ids first, then payload), replaying the decisions.
      const std::size_t start = next_row;
      std::uint64_t acc_copy = acc;
      std::size_t taken = 0;
      std::size_t r = start;
      if (tids) {
        for (; taken < chunk; ++r) {
          if (keep_row(r, acc_copy)) {
            put(&trace_ids[r], 8);
            ++taken;
          }
        }
        acc_copy = acc;
        taken = 0;
        r = start;
      }
      for (; taken < chunk; ++r) {
        if (keep_row(r, acc)) {
          put(src + r * row_bytes, row_bytes);
          ++taken;
        }
      }
      next_row = r;
    }
    IndexEntry& e = w->index[seq & c.index_mask];
    e.seq = seq;
    e.pos = pos;
    e.size = static_cast<std::uint32_t>(size);
    e.rows = static_cast<std::uint32_t>(chunk);
    e.rows_before = w->rows_committed;
    detail::aref(h.commit_seq).store(seq + 1, std::memory_order_release);

    w->seq = seq + 1;
    w->pos = pos + aligned;
    w->rows_committed += chunk;
    detail::aref(h.next_pos).store(w->pos, std::memory_order_relaxed);
    detail::aref(h.rows_committed).store(w->rows_committed, std::memory_order_relaxed);
    detail::aref(h.records_committed).store(h.records_committed + 1, std::memory_order_relaxed);
    detail::aref(h.bytes_committed).store(h.bytes_committed + size, std::memory_order_relaxed);
    remaining -= chunk;
  }
  return WriteResult::written;
}

std::uint32_t Stream::flag_value(std::string_view name) const noexcept {
  return core_ ? core_->read_flag(name) : 0;
}

bool Stream::on_flag(std::string_view name, std::function<void(std::uint32_t)> callback) {
  if (!core_ || !naming::valid_label_text(name, kFlagNameMax - 1) || !callback) return false;
  StreamCore& c = *core_;
  std::lock_guard<std::mutex> lock(c.flag_mutex);
  auto& slot = c.flag_callbacks[std::string(name)];
  if (slot.second.empty()) slot.first = c.read_flag(name);
  slot.second.push_back(std::move(callback));
  if (!c.flag_thread.joinable()) c.start_flag_thread();
  return true;
}

StreamStats Stream::stats() const noexcept {
  StreamStats s;
  if (!core_) return s;
  const StreamCore& c = *core_;
  s.rows_written = c.rows_written_unlaned.load(std::memory_order_relaxed);
  s.rows_no_ring = c.rows_no_ring.load(std::memory_order_relaxed);
  s.rows_no_lane = c.rows_no_lane.load(std::memory_order_relaxed);
  for (const auto& w : c.writers) {
    LaneHeader& h = *w.header;
    s.rows_written += detail::aref(h.rows_written).load(std::memory_order_relaxed);
    s.rows_committed += detail::aref(h.rows_committed).load(std::memory_order_relaxed);
    s.rows_sampled_out += detail::aref(h.rows_sampled_out).load(std::memory_order_relaxed);
    s.rows_too_large += detail::aref(h.rows_too_large).load(std::memory_order_relaxed);
    s.rows_bad_input += detail::aref(h.rows_bad_input).load(std::memory_order_relaxed);
  }
  return s;
}

bool Stream::has_ring() const noexcept { return core_ && core_->base != nullptr; }
const std::string& Stream::name() const noexcept {
  static const std::string empty;
  return core_ ? core_->name : empty;
}
std::string Stream::segment_path() const { return core_ && core_->base ? core_->path : ""; }

void set_sdk_name(std::string_view sdk) {
  std::lock_guard<std::mutex> lock(detail::g_registry_mutex);
  detail::g_sdk = std::string(sdk.substr(0, 31));
}

}  // namespace mltap
