// The pending table of one predictions stream: predictions waiting for their label, labels
// waiting for their prediction, and joined predictions kept until their TTL ends (so that a
// second label is counted as a duplicate). An open-addressing hash table keyed by trace id
// (linear probing, backward-shift deletion: no tombstones), in one file of the state directory
// mapped MAP_SHARED: every change is in the kernel's page cache the moment it is made, so a
// `kill -9` of the agent loses nothing and the next agent maps the same table. Without a state
// directory the same table lives in anonymous memory.
//
// 32 bytes per slot at a load factor of at most 0.7: <= 46 bytes per pending entry. Its header
// also keeps the stream's join counters and per-window prediction counts, which must survive
// with the entries (coverage is labelled / predictions).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/performance_state.hpp"
#include "mltap/format.hpp"

namespace mltap::performance {

enum class SlotState : std::uint32_t {
  empty = 0,
  pending = 1,        // a prediction waiting for its label: ts = prediction time
  joined = 2,         // a prediction that got its label (duplicate detection): ts = prediction time
  waiting_label = 3,  // a label read before its prediction: ts = label time, value = the label
};

struct Slot {
  std::uint64_t trace_id;
  std::int64_t ts_ns;
  double value;        // the prediction (score, class or value) or, waiting, the label
  std::uint32_t state;  // SlotState
  // A prediction's slice index (slice_table.hpp; 0 = not sliced). Tables of earlier versions had
  // zero here: their entries are unsliced.
  std::uint32_t slice;
};
static_assert(sizeof(Slot) == 32);

inline constexpr double kMaxLoad = 0.7;
inline constexpr std::uint32_t kWindowCounterSlots = 1024;

// Predictions counted per prediction-time window (by window index modulo kWindowCounterSlots).
struct WindowCounter {
  std::int64_t start_ns;  // INT64_MIN: unused
  std::uint64_t predictions;
  std::uint64_t evicted;
  std::uint64_t reserved;
};

struct TableHeader {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t slot_bytes;
  std::uint64_t capacity;     // slots
  std::uint64_t max_entries;
  std::uint64_t count;        // occupied slots
  std::uint64_t by_state[4];  // occupied slots by SlotState
  std::int64_t window_ns;
  std::uint32_t task;
  std::uint32_t reserved0;
  char stream[format::kStreamNameMax];
  char labels_stream[format::kStreamNameMax];
  core::JoinCounters counters;
  std::uint64_t sweep_cursor;
  core::PrejoinedCounters prejoined;  // pre-joined streams only (was reserved: zero in old files)
  std::uint64_t reserved[32 - sizeof(core::PrejoinedCounters) / 8];
};

class PendingTable {
 public:
  struct Identity {
    std::string stream;
    std::string labels_stream;
    format::Task task = format::Task::none;
    std::int64_t window_ns = 0;
  };
  // Maps (or creates) `path`; empty path: anonymous memory. A file whose identity, window or size
  // differs from what is asked is rebuilt: its entries are moved into a table of the asked size
  // (the eviction order applies if they do not fit). Throws std::runtime_error when the file
  // cannot be created or mapped.
  static std::unique_ptr<PendingTable> open(const std::string& path, const Identity& id,
                                            std::uint64_t max_entries);
  // Reads only the identity stored in a table file (to reopen tables found at start); nullopt
  // when it is not a table.
  static std::optional<Identity> peek(const std::string& path);
  ~PendingTable();
  PendingTable(const PendingTable&) = delete;
  PendingTable& operator=(const PendingTable&) = delete;

  // The slot holding `trace_id`, or nullptr.
  Slot* find(std::uint64_t trace_id) noexcept;
  // Inserts (the id must be absent and the table below max_entries: see full()).
  Slot* insert(std::uint64_t trace_id, std::int64_t ts_ns, double value, SlotState state,
               std::uint32_t slice = 0) noexcept;
  void set_state(Slot* s, SlotState state) noexcept;
  // Removes the slot (backward shift: later slots of the cluster may move).
  void erase(Slot* s) noexcept;
  bool full() const noexcept { return h_->count >= h_->max_entries; }

  // Calls fn(slot) for up to `budget` slots from the sweep cursor on; fn returns true to erase.
  template <class Fn>
  void sweep(std::uint64_t budget, Fn&& fn);

  TableHeader& header() noexcept { return *h_; }
  const TableHeader& header() const noexcept { return *h_; }
  WindowCounter& window_counter(std::int64_t start_ns) noexcept;
  const WindowCounter* find_window_counter(std::int64_t start_ns) const noexcept;
  const WindowCounter* window_counters() const noexcept { return windows_; }
  std::uint64_t capacity() const noexcept { return h_->capacity; }
  std::uint64_t bytes() const noexcept { return bytes_; }
  bool durable() const noexcept { return !path_.empty(); }
  Slot* slots() noexcept { return slots_; }

 private:
  PendingTable() = default;
  std::uint64_t home(std::uint64_t trace_id) const noexcept;
  std::string path_;
  void* base_ = nullptr;
  std::uint64_t bytes_ = 0;
  TableHeader* h_ = nullptr;
  WindowCounter* windows_ = nullptr;
  Slot* slots_ = nullptr;
};

template <class Fn>
void PendingTable::sweep(std::uint64_t budget, Fn&& fn) {
  const std::uint64_t cap = h_->capacity;
  std::uint64_t i = h_->sweep_cursor % cap;
  // `budget` counts positions passed, not erasures: a full sweep (budget == capacity) visits every
  // slot however many it erases. After an erase the shifted-in slot is examined again (i stays);
  // erasures are bounded by the entries, so the loop ends.
  for (std::uint64_t n = 0; n < budget && n < cap;) {
    Slot& s = slots_[i];
    if (s.state != static_cast<std::uint32_t>(SlotState::empty) && fn(s)) {
      erase(&s);
      continue;
    }
    i = i + 1 == cap ? 0 : i + 1;
    ++n;
  }
  h_->sweep_cursor = i;
}

}  // namespace mltap::performance
