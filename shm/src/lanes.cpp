// Which thread writes which lane. A thread claims a lane on its first write to a stream (CAS on
// the lane header's owner_tid) and keeps it until it exits; the stream's `recent` cache finds it
// again from the thread pointer (the fast path), a thread-local table when the cache slot was
// taken by another thread. Forked children drop their parent's lanes and open a segment of
// their own on their first write.
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "stream_core.hpp"

namespace mltap::detail {

std::mutex g_registry_mutex;
std::mutex g_process_mutex;
std::atomic<std::uint64_t> g_fork_generation{0};

namespace {

using namespace mltap::format;

std::string& sdk_storage() {
  static auto* s = new std::string("cpp/0.1.0");  // leaked: used until the very end
  return *s;
}

std::uint32_t current_tid() noexcept {
  thread_local std::uint32_t tid = static_cast<std::uint32_t>(::syscall(SYS_gettid));
  return tid;
}

// Live streams by slot, for the thread-exit lane release and slot reuse.
struct Registry {
  std::vector<StreamCore*> slots;
  std::vector<std::uint32_t> free_slots;
  std::uint64_t next_serial = 1;
};

void atfork_prepare() {
  g_registry_mutex.lock();
  g_process_mutex.lock();
}
void atfork_parent() {
  g_process_mutex.unlock();
  g_registry_mutex.unlock();
}
void atfork_child();

Registry& registry() {
  static Registry* r = [] {
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    return new Registry();  // leaked on purpose: used by thread-exit destructors
  }();
  return *r;
}

// In the child only the forking thread exists, and every stream's lanes belong to the parent's
// segment: forgetting them sends the child's first write to the claim path, which sees the new
// fork generation and opens the child's own segment.
void atfork_child() {
  g_process_mutex.unlock();
  g_registry_mutex.unlock();
  g_fork_generation.fetch_add(1, std::memory_order_relaxed);
  for (StreamCore* core : registry().slots) {
    if (!core) continue;
    core->forget_lanes_in_child();
    core->forget_parent_threads();
  }
}

// Per thread: slot -> (serial, lane writer). Releases its lanes when the thread exits.
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
        aref(e.writer->owner_key).store(0, std::memory_order_relaxed);
        aref(e.writer->header->owner_tid).store(0, std::memory_order_release);
      }
    }
  }
};
thread_local ThreadLanes t_lanes;

}  // namespace

void register_stream(StreamCore& c) {
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  Registry& r = registry();
  c.serial = r.next_serial++;
  if (!r.free_slots.empty()) {
    c.slot = r.free_slots.back();
    r.free_slots.pop_back();
    r.slots[c.slot] = &c;
  } else {
    r.slots.push_back(&c);  // may throw: nothing changed yet
    c.slot = static_cast<std::uint32_t>(r.slots.size() - 1);
  }
  c.fork_generation = g_fork_generation.load(std::memory_order_relaxed);
}

void unregister_stream(StreamCore& c) noexcept {
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  Registry& r = registry();
  r.slots[c.slot] = nullptr;
  try {
    r.free_slots.push_back(c.slot);
  } catch (...) {  // the slot is not reused
  }
}

const std::string& sdk_name() { return sdk_storage(); }

void set_sdk(std::string_view sdk) {
  std::lock_guard<std::mutex> lock(g_process_mutex);
  sdk_storage() = std::string(sdk.substr(0, 31));
}

// The cache missed: a thread's first write to the stream, its cache slot taken by another
// thread, a forked child, or no ring.
LaneWriter* StreamCore::lane_for_this_thread() noexcept {
  if (LaneWriter* w = cached_lane()) return w;
  if (fork_generation != g_fork_generation.load(std::memory_order_relaxed)) reopen_after_fork();
  if (!base || ring_lost.load(std::memory_order_relaxed)) return nullptr;
  const std::uintptr_t key = thread_key();
  // Into the stream's cache unless its slot serves another thread's lane: two threads whose
  // keys share a slot must not evict each other on every write (the second one takes this path).
  auto remember = [&](LaneWriter* w) noexcept {
    auto& r = recent[slot_of(key)];
    LaneWriter* cur = r.load(std::memory_order_relaxed);
    if (cur == nullptr || aref(cur->owner_key).load(std::memory_order_relaxed) == 0) {
      r.store(w, std::memory_order_relaxed);
    }
  };
  auto& entries = t_lanes.entries;
  if (slot < entries.size() && entries[slot].serial == serial && entries[slot].writer &&
      aref(entries[slot].writer->owner_key).load(std::memory_order_relaxed) == key) {
    remember(entries[slot].writer);
    return entries[slot].writer;
  }
  LaneWriter* w = claim_lane();
  if (!w) return nullptr;  // retried on the next write
  try {
    if (entries.size() <= slot) entries.resize(slot + 1);
  } catch (...) {
    aref(w->owner_key).store(0, std::memory_order_relaxed);
    aref(w->header->owner_tid).store(0, std::memory_order_release);
    return nullptr;
  }
  entries[slot] = {serial, w};
  remember(w);
  return w;
}

LaneWriter* StreamCore::claim_lane() noexcept {
  const std::uint32_t tid = current_tid();
  auto try_claim = [&](std::uint32_t i, std::uint32_t expected) -> LaneWriter* {
    LaneWriter& w = writers[i];
    // Read before the claim: another thread may be setting it (reserve_lane) right now.
    if (!aref(w.backed).load(std::memory_order_relaxed) &&
        fresh_lanes_exhausted.load(std::memory_order_relaxed))
      return nullptr;
    if (!aref(w.header->owner_tid).compare_exchange_strong(expected, tid,
                                                           std::memory_order_acquire)) {
      return nullptr;
    }
    if (!aref(w.backed).load(std::memory_order_relaxed) && !reserve_lane(w, i)) {
      aref(w.header->owner_tid).store(0, std::memory_order_release);
      return nullptr;
    }
    // Continue the lane where its previous owner stopped.
    LaneHeader& h = *w.header;
    w.seq = aref(h.commit_seq).load(std::memory_order_relaxed);
    // The lane header is in the shared file: anyone who can write the file can set next_pos. Records
    // start 64-aligned (a record header then never wraps the ring's end); our own values already are.
    w.pos = format::align_up(aref(h.next_pos).load(std::memory_order_relaxed), format::kRecordAlign);
    w.reserved_seq = aref(h.reserve_seq).load(std::memory_order_relaxed);
    w.reserved_pos = aref(h.reserve_pos).load(std::memory_order_relaxed);
    w.rows_written = aref(h.rows_written).load(std::memory_order_relaxed);
    w.rows_sampled_out = aref(h.rows_sampled_out).load(std::memory_order_relaxed);
    w.rows_committed = aref(h.rows_committed).load(std::memory_order_relaxed);
    w.bytes_committed = aref(h.bytes_committed).load(std::memory_order_relaxed);
    w.rows_too_large = aref(h.rows_too_large).load(std::memory_order_relaxed);
    w.rows_bad_input = aref(h.rows_bad_input).load(std::memory_order_relaxed);
    aref(h.claims).fetch_add(1, std::memory_order_relaxed);
    aref(w.owner_key).store(thread_key(), std::memory_order_relaxed);
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

// In the forked child (single-threaded): no thread owns any lane of this process.
void StreamCore::forget_lanes_in_child() noexcept {
  for (auto& slot : recent) slot.store(nullptr, std::memory_order_relaxed);
  for (auto& w : writers) aref(w.owner_key).store(0, std::memory_order_relaxed);
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
  ring_lost.store(false, std::memory_order_relaxed);
  fresh_lanes_exhausted.store(false, std::memory_order_relaxed);
  create_segment();
  std::lock_guard<std::mutex> flags(flag_mutex);
  if (!flag_callbacks.empty() && !flag_thread.joinable()) {
    try {
      start_flag_thread();
    } catch (...) {
      std::fprintf(stderr, "mltap: stream '%s': cannot restart flag callbacks after fork\n", name.c_str());
    }
  }
}

}  // namespace mltap::detail
