#include "agent/performance/pending_table.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <ctime>
#include <stdexcept>

#include "core/log.hpp"

namespace mltap::performance {
namespace {

constexpr std::uint64_t kMagic = 0x4C42414E'50544C4DULL;  // "MLTPNABL"
constexpr std::uint32_t kVersion = 1;
constexpr std::uint64_t kHeaderBytes = 4096;
constexpr std::uint64_t kWindowsBytes = sizeof(WindowCounter) * kWindowCounterSlots;
static_assert(sizeof(TableHeader) <= kHeaderBytes);
static_assert(sizeof(core::PrejoinedCounters) % 8 == 0 && sizeof(core::PrejoinedCounters) / 8 <= 16);

std::uint64_t mix(std::uint64_t x) noexcept {  // splitmix64: trace ids are often sequential
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

std::uint64_t capacity_for(std::uint64_t max_entries) noexcept {
  return static_cast<std::uint64_t>(std::ceil(static_cast<double>(max_entries) / kMaxLoad)) + 1;
}

std::uint64_t file_bytes(std::uint64_t capacity) noexcept {
  return kHeaderBytes + kWindowsBytes + capacity * sizeof(Slot);
}

void copy_name(char* dst, const std::string& s) {
  std::memset(dst, 0, format::kStreamNameMax);
  std::memcpy(dst, s.data(), std::min<std::size_t>(s.size(), format::kStreamNameMax - 1));
}

std::string read_name(const char* src) {
  return std::string(src, strnlen(src, format::kStreamNameMax - 1));
}

struct Mapping {
  void* base = nullptr;
  std::uint64_t bytes = 0;
};

// Maps an existing table file read-write; nullopt when it is not a usable table (too small,
// wrong magic or version, inconsistent sizes).
std::optional<Mapping> map_existing(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return std::nullopt;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<std::uint64_t>(st.st_size) < kHeaderBytes + kWindowsBytes) {
    ::close(fd);
    return std::nullopt;
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return std::nullopt;
  const auto* h = static_cast<const TableHeader*>(p);
  if (h->magic != kMagic || h->version != kVersion || h->slot_bytes != sizeof(Slot) ||
      h->capacity == 0 || file_bytes(h->capacity) != size || h->max_entries >= h->capacity ||
      h->count > h->max_entries) {
    ::munmap(p, size);
    return std::nullopt;
  }
  return Mapping{p, size};
}

}  // namespace

std::optional<PendingTable::Identity> PendingTable::peek(const std::string& path) {
  auto m = map_existing(path);
  if (!m) return std::nullopt;
  const auto* h = static_cast<const TableHeader*>(m->base);
  Identity id;
  id.stream = read_name(h->stream);
  id.labels_stream = read_name(h->labels_stream);
  id.task = h->task <= format::kTaskMax ? static_cast<format::Task>(h->task) : format::Task::none;
  id.window_ns = h->window_ns;
  ::munmap(m->base, m->bytes);
  return id;
}

std::unique_ptr<PendingTable> PendingTable::open(const std::string& path, const Identity& id,
                                                 std::uint64_t max_entries) {
  std::unique_ptr<PendingTable> old;
  if (!path.empty()) {
    auto m = map_existing(path);
    struct stat st {};
    if (!m && ::lstat(path.c_str(), &st) == 0) {
      // Not a table of this version (a newer mltapd's, damaged, edited): moved aside, not lost.
      const std::string aside = path + ".unusable-" + std::to_string(::time(nullptr));
      if (::rename(path.c_str(), aside.c_str()) == 0) {
        core::log::warn("performance: {} is not a usable pending table; moved to {}", path, aside);
      }
    }
    if (m) {
      old.reset(new PendingTable());
      old->base_ = m->base;
      old->bytes_ = m->bytes;
      old->h_ = static_cast<TableHeader*>(m->base);
      old->windows_ = reinterpret_cast<WindowCounter*>(static_cast<char*>(m->base) + kHeaderBytes);
      old->slots_ = reinterpret_cast<Slot*>(static_cast<char*>(m->base) + kHeaderBytes + kWindowsBytes);
      const TableHeader& h = *old->h_;
      if (h.max_entries == max_entries && h.window_ns == id.window_ns &&
          read_name(h.stream) == id.stream) {
        // The same table: keep it. The labels stream and task may have been (re)declared.
        copy_name(old->h_->labels_stream, id.labels_stream);
        old->h_->task = static_cast<std::uint32_t>(id.task);
        old->path_ = path;
        return old;
      }
    }
  }
  // A new table; with an old one of another size, its entries move over (below). The new file is
  // built under a temporary name and renamed over the old one, so that a kill -9 during the
  // rebuild leaves one whole table or the other.
  const std::uint64_t capacity = capacity_for(max_entries);
  const std::uint64_t bytes = file_bytes(capacity);
  void* base = nullptr;
  const std::string tmp = path.empty() ? std::string() : path + ".new";
  if (path.empty()) {
    base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) throw std::runtime_error("performance table: out of memory");
  } else {
    ::unlink(tmp.c_str());
    const int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) throw std::runtime_error("cannot create " + tmp + ": " + std::strerror(errno));
    // Reserved up front: a full disk fails here, not as a SIGBUS at a later touch.
    const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes));
    if (err != 0) {
      ::close(fd);
      ::unlink(tmp.c_str());
      throw std::runtime_error("cannot reserve " + std::to_string(bytes) + " bytes for " + tmp +
                               ": " + std::strerror(err));
    }
    base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (base == MAP_FAILED) {
      ::unlink(tmp.c_str());
      throw std::runtime_error("cannot map " + tmp + ": " + std::strerror(errno));
    }
  }
  std::unique_ptr<PendingTable> t(new PendingTable());
  t->base_ = base;
  t->bytes_ = bytes;
  t->h_ = static_cast<TableHeader*>(base);
  t->windows_ = reinterpret_cast<WindowCounter*>(static_cast<char*>(base) + kHeaderBytes);
  t->slots_ = reinterpret_cast<Slot*>(static_cast<char*>(base) + kHeaderBytes + kWindowsBytes);
  TableHeader& h = *t->h_;
  h.version = kVersion;
  h.slot_bytes = sizeof(Slot);
  h.capacity = capacity;
  h.max_entries = max_entries;
  h.window_ns = id.window_ns;
  h.task = static_cast<std::uint32_t>(id.task);
  copy_name(h.stream, id.stream);
  copy_name(h.labels_stream, id.labels_stream);
  for (std::uint32_t i = 0; i < kWindowCounterSlots; ++i) t->windows_[i].start_ns = INT64_MIN;
  if (old) {
    // Counters carry over; entries move while they fit (oldest first would need a sort: the
    // capacity only changes with the configuration, and what does not fit is counted).
    h.counters = old->h_->counters;
    h.prejoined = old->h_->prejoined;
    if (old->h_->window_ns == id.window_ns) {
      for (std::uint32_t i = 0; i < kWindowCounterSlots; ++i) t->windows_[i] = old->windows_[i];
    }
    for (std::uint64_t i = 0; i < old->h_->capacity; ++i) {
      const Slot& s = old->slots_[i];
      if (s.state == static_cast<std::uint32_t>(SlotState::empty)) continue;
      const auto st = static_cast<SlotState>(s.state);
      if (t->full() || t->find(s.trace_id)) {
        const auto cause = st == SlotState::pending ? core::EvictionCause::prediction
                           : st == SlotState::joined ? core::EvictionCause::joined_marker
                                                     : core::EvictionCause::waiting_label;
        ++h.counters.evicted[static_cast<std::size_t>(cause)];
        continue;
      }
      t->insert(s.trace_id, s.ts_ns, s.value, st, s.slice);
    }
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  h.magic = kMagic;  // last: a table killed while being built is refused and rebuilt
  if (!path.empty()) {
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
      throw std::runtime_error("cannot rename " + tmp + ": " + std::strerror(errno));
    }
    t->path_ = path;
  }
  return t;
}

PendingTable::~PendingTable() {
  if (base_) ::munmap(base_, bytes_);
}

std::uint64_t PendingTable::home(std::uint64_t trace_id) const noexcept {
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(mix(trace_id)) * h_->capacity) >> 64);
}

Slot* PendingTable::find(std::uint64_t trace_id) noexcept {
  const std::uint64_t cap = h_->capacity;
  for (std::uint64_t i = home(trace_id);; i = i + 1 == cap ? 0 : i + 1) {
    Slot& s = slots_[i];
    if (s.state == static_cast<std::uint32_t>(SlotState::empty)) return nullptr;
    if (s.trace_id == trace_id) return &s;
  }
}

Slot* PendingTable::insert(std::uint64_t trace_id, std::int64_t ts_ns, double value,
                           SlotState state, std::uint32_t slice) noexcept {
  const std::uint64_t cap = h_->capacity;
  std::uint64_t i = home(trace_id);
  while (slots_[i].state != static_cast<std::uint32_t>(SlotState::empty)) i = i + 1 == cap ? 0 : i + 1;
  Slot& s = slots_[i];
  s.trace_id = trace_id;
  s.ts_ns = ts_ns;
  s.value = value;
  s.slice = slice;
  s.state = static_cast<std::uint32_t>(state);  // the slot is whole before it counts
  ++h_->count;
  ++h_->by_state[static_cast<std::uint32_t>(state)];
  return &s;
}

void PendingTable::set_state(Slot* s, SlotState state) noexcept {
  --h_->by_state[s->state];
  s->state = static_cast<std::uint32_t>(state);
  ++h_->by_state[static_cast<std::uint32_t>(state)];
}

// Backward-shift deletion: each later slot of the cluster moves into the hole when its home is
// not between the hole and itself, so that every lookup still finds it before an empty slot.
void PendingTable::erase(Slot* s) noexcept {
  const std::uint64_t cap = h_->capacity;
  --h_->by_state[s->state];
  --h_->count;
  std::uint64_t hole = static_cast<std::uint64_t>(s - slots_);
  std::uint64_t j = hole;
  for (;;) {
    j = j + 1 == cap ? 0 : j + 1;
    Slot& next = slots_[j];
    if (next.state == static_cast<std::uint32_t>(SlotState::empty)) break;
    const std::uint64_t k = home(next.trace_id);
    // `next` may move to `hole` unless its home k lies cyclically in (hole, j].
    const bool k_in_range = hole <= j ? (hole < k && k <= j) : (hole < k || k <= j);
    if (k_in_range) continue;
    slots_[hole] = next;
    hole = j;
  }
  slots_[hole].state = static_cast<std::uint32_t>(SlotState::empty);
}

WindowCounter& PendingTable::window_counter(std::int64_t start_ns) noexcept {
  const std::int64_t index = start_ns / h_->window_ns;
  WindowCounter& w = windows_[static_cast<std::uint64_t>(index) % kWindowCounterSlots];
  if (w.start_ns == start_ns) return w;
  if (w.start_ns < start_ns) {
    // The slot of a window 1024 windows older: forgotten (retention stays below that).
    w = WindowCounter{start_ns, 0, 0, 0};
    return w;
  }
  // A prediction 1024 windows older than one already counted: beyond any retention.
  static thread_local WindowCounter scratch;
  scratch = WindowCounter{start_ns, 0, 0, 0};
  return scratch;
}

const WindowCounter* PendingTable::find_window_counter(std::int64_t start_ns) const noexcept {
  const std::int64_t index = start_ns / h_->window_ns;
  const WindowCounter& w = windows_[static_cast<std::uint64_t>(index) % kWindowCounterSlots];
  return w.start_ns == start_ns ? &w : nullptr;
}

}  // namespace mltap::performance
