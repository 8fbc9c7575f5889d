#include "agent/performance/slice_table.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "core/log.hpp"

#include "agent/performance/pending_table.hpp"

namespace mltap::performance {

struct SliceTable::Header {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t generation;
  char column[64];
  std::int64_t window_ns;
  std::uint64_t count;  // values assigned
  double values[kMaxSliceValues];
  std::uint64_t other_rows;
  std::uint64_t invalid_rows;
  std::uint64_t missing_rows;
  std::uint64_t reserved[16];
};

// Per window (index modulo kWindowCounterSlots, as the pending table's window counters).
struct SliceTable::WindowCounts {
  std::int64_t start_ns;  // INT64_MIN: unused
  std::uint64_t predictions[kSliceCodes];
};

namespace {

constexpr std::uint64_t kSliceMagic = 0x5345434C'53505444ULL;
constexpr std::uint32_t kSliceVersion = 1;
constexpr std::uint64_t kSliceHeaderBytes = 4096;

}  // namespace

std::unique_ptr<SliceTable> SliceTable::open(const std::string& path, const std::string& column,
                                             std::uint32_t max_values, std::int64_t window_ns) {
  static_assert(sizeof(Header) <= kSliceHeaderBytes);
  const std::uint64_t bytes = kSliceHeaderBytes + sizeof(WindowCounts) * kWindowCounterSlots;
  void* base = nullptr;
  bool fresh = true;
  std::uint32_t generation = 1;
  if (path.empty()) {
    base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) throw std::runtime_error("slice table: out of memory");
  } else {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      throw std::runtime_error(path + " is not a regular file");
    }
    const bool sized = static_cast<std::uint64_t>(st.st_size) == bytes;
    if (!sized) {
      // Another size: not a slice table of this version; started over (counted in the log).
      if (st.st_size != 0) core::log::warn("performance: {} is not a slice table of this version; started over", path);
      if (::ftruncate(fd, 0) != 0 || ::posix_fallocate(fd, 0, static_cast<off_t>(bytes)) != 0) {
        ::close(fd);
        throw std::runtime_error("cannot reserve " + std::to_string(bytes) + " bytes for " + path);
      }
    }
    base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (base == MAP_FAILED) throw std::runtime_error("cannot map " + path + ": " + std::strerror(errno));
    const auto* h = static_cast<const Header*>(base);
    if (sized && h->magic == kSliceMagic && h->version == kSliceVersion && h->count <= kMaxSliceValues) {
      if (std::string(h->column, strnlen(h->column, sizeof h->column)) == column) fresh = false;
      else generation = h->generation + 1;
    }
  }
  std::unique_ptr<SliceTable> t(new SliceTable());
  t->column_ = column;
  t->max_values_ = std::min(max_values, kMaxSliceValues);
  t->window_ns_ = window_ns;
  t->base_ = base;
  t->bytes_ = bytes;
  t->h_ = static_cast<Header*>(base);
  t->windows_ = reinterpret_cast<WindowCounts*>(static_cast<char*>(base) + kSliceHeaderBytes);
  Header& h = *t->h_;
  if (fresh) {
    h.magic = 0;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    std::memset(base, 0, bytes);
    h.version = kSliceVersion;
    h.generation = generation;
    std::memcpy(h.column, column.data(), std::min<std::size_t>(column.size(), sizeof h.column - 1));
    h.window_ns = window_ns;
    for (std::uint32_t i = 0; i < kWindowCounterSlots; ++i) t->windows_[i].start_ns = INT64_MIN;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    h.magic = kSliceMagic;
  } else if (h.window_ns != window_ns) {
    // Other windows: the per-window counts no longer apply; the value mapping does.
    for (std::uint32_t i = 0; i < kWindowCounterSlots; ++i) t->windows_[i] = WindowCounts{INT64_MIN, {}};
    h.window_ns = window_ns;
  }
  return t;
}

SliceTable::~SliceTable() {
  if (base_) ::munmap(base_, bytes_);
}

std::uint32_t SliceTable::code_for(double v) noexcept {
  if (!std::isfinite(v)) {
    ++h_->invalid_rows;
    return kSliceOther;
  }
  if (v == 0) v = 0;  // -0 and 0 are one slice
  const auto n = static_cast<std::uint32_t>(h_->count);
  for (std::uint32_t i = 0; i < n; ++i) {
    if (h_->values[i] == v) return i + 1;
  }
  if (n < max_values_) {
    h_->values[n] = v;
    h_->count = n + 1;  // the value is written before it counts
    return n + 1;
  }
  ++h_->other_rows;
  return kSliceOther;
}

void SliceTable::count_missing(std::uint64_t rows) noexcept { h_->missing_rows += rows; }

SliceTable::WindowCounts* SliceTable::slot_of(std::int64_t start) const noexcept {
  const std::int64_t index = start / window_ns_;
  return &windows_[static_cast<std::uint64_t>(index) % kWindowCounterSlots];
}

void SliceTable::count_prediction(std::int64_t start, std::uint32_t code) noexcept {
  if (code == kSliceNone || code >= kSliceCodes) return;
  WindowCounts* w = slot_of(start);
  if (w->start_ns > start) return;  // 1024 windows older than one counted: beyond any retention
  if (w->start_ns != start) *w = WindowCounts{start, {}};
  ++w->predictions[code];
}

std::uint64_t SliceTable::predictions(std::int64_t start, std::uint32_t code) const noexcept {
  if (code >= kSliceCodes) return 0;
  const WindowCounts* w = slot_of(start);
  return w->start_ns == start ? w->predictions[code] : 0;
}

std::string SliceTable::name(std::uint32_t code) const {
  if (code == kSliceOther || code == kSliceNone || code > values()) return "other";
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, h_->values[code - 1]);
  return std::string(buf, r.ptr);
}

std::uint32_t SliceTable::values() const noexcept { return static_cast<std::uint32_t>(h_->count); }
std::uint32_t SliceTable::generation() const noexcept { return h_->generation; }
std::uint64_t SliceTable::other_rows() const noexcept { return h_->other_rows; }
std::uint64_t SliceTable::invalid_rows() const noexcept { return h_->invalid_rows; }
std::uint64_t SliceTable::missing_rows() const noexcept { return h_->missing_rows; }

}  // namespace mltap::performance
