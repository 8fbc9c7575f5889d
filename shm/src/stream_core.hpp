// Internal state of a producer stream (shm/src only; the API is include/mltap/stream.hpp).
//
// Files by concern:
//   stream_core.hpp   this state, and the inline row fast path (write_path.hpp) reads it
//   segment_file.cpp  creating, reserving, mapping and removing segment files; the SIGBUS guard
//   lanes.cpp         which thread writes which lane: claims, the thread caches, fork
//   sampling.cpp      sampling windows and the keep share
//   write.cpp         the general write path (any shape, batches), in named stages
//   control.cpp       flags set by the agent, and their callbacks
//   stream.cpp        mltap::Stream: option checks, statistics, life cycle
#pragma once

#include <pthread.h>
#include <time.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "mltap/format.hpp"
#include "mltap/stream.hpp"

namespace mltap::detail {

inline constexpr std::uint64_t kKeepAll = std::numeric_limits<std::uint64_t>::max();
inline constexpr unsigned kWindowShift = 28;  // sampling windows of 2^28 ns (~268 ms)
inline constexpr double kWindowSeconds = static_cast<double>(1ull << kWindowShift) / 1e9;
// While sampling, the clock (and so the window) is looked at on every 16th write only; a kept
// row always reads it for its timestamp.
inline constexpr std::uint32_t kClockSkipMask = 15;
// Lanes a stream remembers by thread (a direct-mapped cache; a miss costs one claim lookup).
inline constexpr std::uint32_t kRecentLanes = 8;

template <class T>
std::atomic_ref<T> aref(T& v) noexcept {
  return std::atomic_ref<T>(v);
}

// A trace id's keep/drop decision is this hash against a threshold, so that every component with
// the same sampling rate keeps the same trace ids, and components with lower rates keep a subset
// of those kept by components with higher rates (the agent's retained samples use it too).
constexpr std::uint64_t mix64(std::uint64_t x) noexcept { return format::trace_id_hash(x); }

// The calling thread's identity for the lane cache: its thread pointer, one register read.
// Unique among live threads; a dead thread's stale key is harmless (see LaneWriter::owner_key).
inline std::uintptr_t thread_key() noexcept {
#if defined(__x86_64__) || defined(__aarch64__)
  return reinterpret_cast<std::uintptr_t>(__builtin_thread_pointer());
#else
  return static_cast<std::uintptr_t>(pthread_self());
#endif
}

// Process-private state of one lane, touched only by the thread that owns the lane (owner_key
// also by the claiming and releasing threads). Aligned to cache lines: neighbouring lanes'
// writers must not share one (false sharing made two threads' writes ~3.5x slower than one's).
struct alignas(64) LaneWriter {
  // Read on every write.
  std::uintptr_t owner_key = 0;  // thread_key() of the owner, 0 = none (atomic_ref)
  format::LaneHeader* header = nullptr;
  format::IndexEntry* index = nullptr;
  std::uint8_t* data = nullptr;
  std::uint64_t data_mask = 0;
  std::uint64_t index_mask = 0;
  std::uint64_t max_record = 0;
  // The last accepted row description: an identical one skips revalidation (only a shape the
  // stream's declaration allows is ever accepted). row_key is the fast path's form of it: dtype
  // and length of a 1-D row in one word (never equal for another shape).
  std::uint64_t row_key = 0;
  format::DType valid_dtype = format::DType::invalid;
  std::uint8_t valid_ndim = 0;
  // The lane's index and data pages are reserved (fallocate) and mapped. Set by the claiming
  // thread, read by any thread about to claim (atomic_ref).
  bool backed = false;
  std::uint32_t clock_skip = 0;

  std::uint32_t valid_dims[format::kMaxRowDims] = {};
  std::uint64_t valid_row_bytes = 0;

  static constexpr std::uint64_t row_key_of(format::DType dtype, std::uint32_t n) noexcept {
    return (std::uint64_t{static_cast<std::uint16_t>(dtype)} << 32 | n) + (1ull << 48);
  }
  // Position and the reservation announced in the lane header (FORMAT.md "Write protocol").
  std::uint64_t seq = 0;
  std::uint64_t pos = 0;
  std::uint64_t reserved_seq = 0;
  std::uint64_t reserved_pos = 0;

  // Private copies of the lane header's counters: the write path stores them, never loads the
  // shared line back.
  std::uint64_t rows_written = 0;
  std::uint64_t rows_sampled_out = 0;
  std::uint64_t rows_committed = 0;
  std::uint64_t bytes_committed = 0;
  std::uint64_t rows_too_large = 0;
  std::uint64_t rows_bad_input = 0;
  // Sampling.
  std::uint64_t sample_acc = 0;  // fixed-point accumulator for rows without trace ids
  std::uint64_t window_id = 0;   // this lane's kept rows in the current sampling window
  std::uint64_t window_rows = 0;
  std::uint64_t next_estimate_at = 0;  // re-estimate the rate at budget, 2x, 4x, ... rows
  std::uint64_t last_now = 0;
};

struct StreamCore {
  // ---- Read by every write, written rarely (their own cache lines). ----
  // Lanes by thread: recent[slot_of(thread_key())] is this thread's lane when its owner_key
  // says so; anything else is a miss that the claim path resolves.
  alignas(64) std::atomic<LaneWriter*> recent[kRecentLanes] = {};
  // Sampling: changed once per window by whichever thread sees the window change first.
  alignas(64) std::atomic<std::uint64_t> keep_threshold{kKeepAll};
  std::atomic<std::uint32_t> keep_fraction32{0};  // keep share * 2^32 when below 1
  bool precise_clock = false;
  std::atomic<std::uint64_t> window_id{0};
  std::atomic<std::uint64_t> window_rows_base{0};
  std::atomic<std::uint64_t> window_started_ns{0};
  std::uint64_t allowed_per_window = 0;  // budget x window length, 0 = unlimited

  // ---- Cold. ----
  // Identity for the thread-local lane cache: `slot` indexes the cache, `serial` is never reused.
  alignas(64) std::uint32_t slot = 0;
  std::uint64_t serial = 0;

  std::string name;
  StreamOptions options;
  std::vector<std::string> feature_names;
  std::vector<std::uint32_t> declared_shape;
  std::uint64_t fork_generation = 0;

  // Mapping (null without a ring).
  std::uint8_t* base = nullptr;
  std::uint64_t mapped_bytes = 0;
  int fd = -1;  // kept open to reserve lanes' pages when they are first claimed
  std::string path;
  format::SegmentHeader* header = nullptr;
  format::ControlBlock* control = nullptr;
  std::uint32_t lane_count = 0;
  std::vector<LaneWriter> writers;
  std::atomic<std::uint32_t> lanes_in_use_hint{0};  // highest claimed lane + 1
  // Reserving a never-used lane's pages failed (a full file system): claims stop trying them.
  std::atomic<bool> fresh_lanes_exhausted{false};
  // Set by the SIGBUS guard when the file was truncated under the mapping: the mapping is now
  // anonymous memory, and later writes count as rows_no_ring.
  std::atomic<bool> ring_lost{false};

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

  static std::uint32_t slot_of(std::uintptr_t key) noexcept {
    return static_cast<std::uint32_t>((key * 0x9E3779B97F4A7C15ULL) >> 61);
  }
  static_assert(kRecentLanes == 8, "slot_of keeps 3 bits");

  // The calling thread's lane if the stream's cache knows it (the fast path), else null.
  LaneWriter* cached_lane() const noexcept {
    const std::uintptr_t key = thread_key();
    LaneWriter* w = recent[slot_of(key)].load(std::memory_order_relaxed);
    if (w && aref(w->owner_key).load(std::memory_order_relaxed) == key) [[likely]] return w;
    return nullptr;
  }

  // segment_file.cpp
  bool create_segment() noexcept;
  bool reserve_lane(LaneWriter& w, std::uint32_t lane) noexcept;
  void unmap() noexcept;
  void close() noexcept;
  // lanes.cpp
  LaneWriter* lane_for_this_thread() noexcept;  // cache, then claim; null: no ring or no lane
  LaneWriter* claim_lane() noexcept;
  void forget_lanes_in_child() noexcept;
  void reopen_after_fork() noexcept;
  // sampling.cpp
  // Every 16th sampled-out write: the clock and the window. Returns WriteResult::sampled_out.
  WriteResult tick(LaneWriter& w) noexcept;
  void roll_window(std::uint64_t id, std::uint64_t now) noexcept;
  void estimate_mid_window(std::uint64_t id, std::uint64_t now) noexcept;
  void set_keep_share(double keep, std::uint64_t id) noexcept;
  std::uint64_t sum_rows_written() const noexcept;
  // control.cpp
  std::uint32_t read_flag(std::string_view name) const noexcept;
  void start_flag_thread();  // with flag_mutex held
  void stop_flag_thread() noexcept;
  void forget_parent_threads() noexcept;
};

// Registry of live streams, for the thread-exit lane release, slot reuse and fork (lanes.cpp).
extern std::mutex g_registry_mutex;
// Process-wide state below the registry: the SDK name and the SIGBUS guard's ranges. Taken
// while g_registry_mutex may be held, never the other way round; both are held across fork().
extern std::mutex g_process_mutex;
extern std::atomic<std::uint64_t> g_fork_generation;
void register_stream(StreamCore& c);
void unregister_stream(StreamCore& c) noexcept;
const std::string& sdk_name();  // with g_process_mutex held
void set_sdk(std::string_view sdk);

// Record timestamps: CLOCK_REALTIME_COARSE (~5 ns through the vDSO, jiffy resolution) unless
// the stream asked for the precise clock.
inline std::uint64_t now_ns(bool precise) noexcept {
  timespec ts;
  clock_gettime(precise ? CLOCK_REALTIME : CLOCK_REALTIME_COARSE, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// segment_file.cpp: whether an agent serves `ns` in `dir` (its presence file is fresh).
bool agent_present(const std::string& dir, const std::string& ns) noexcept;
// Removes segments of `ns` in `dir` that belong to this uid and whose producer is dead (or that
// were closed): what an agent would have removed. Returns how many were removed.
std::size_t remove_dead_segments(const std::string& dir, const std::string& ns) noexcept;

}  // namespace mltap::detail
