// The slices of one predictions stream (docs/performance.md, "Slices"): which value of the
// declared slice column each slice index stands for (first come, up to the configured number;
// the rest go to "other"), and per prediction-time window how many predictions each slice got.
// A small file of the state directory mapped MAP_SHARED next to the pending table (or anonymous
// memory), so that the mapping and the counts survive kill -9 as the table does. The pending
// table's slots and the joined logs hold only the index (Slot::slice, 0 = not sliced).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "agent/performance/config.hpp"

namespace mltap::performance {

inline constexpr std::uint32_t kSliceNone = 0;                     // not sliced
inline constexpr std::uint32_t kSliceOther = kMaxSliceValues + 1;  // past the cap, or NaN/Inf
inline constexpr std::uint32_t kSliceCodes = kMaxSliceValues + 2;

class SliceTable {
 public:
  // Maps (or creates) `path`; empty path: anonymous memory. A file for another column starts
  // over with a new generation (joined log records of an older generation count unsliced).
  // Throws std::runtime_error when the file cannot be created or mapped.
  static std::unique_ptr<SliceTable> open(const std::string& path, const std::string& column,
                                          std::uint32_t max_values, std::int64_t window_ns);
  ~SliceTable();
  SliceTable(const SliceTable&) = delete;
  SliceTable& operator=(const SliceTable&) = delete;

  // The slice of a row whose column holds `value` (assigning the next index while under the cap).
  std::uint32_t code_for(double value) noexcept;
  // A record without the column: counted, not sliced.
  void count_missing(std::uint64_t rows) noexcept;
  void count_prediction(std::int64_t window_start_ns, std::uint32_t code) noexcept;
  std::uint64_t predictions(std::int64_t window_start_ns, std::uint32_t code) const noexcept;
  // "other", or the value as the shortest text that reads back to it ("3", "0.25").
  std::string name(std::uint32_t code) const;
  std::uint32_t values() const noexcept;  // indices assigned so far (codes 1..values())
  std::uint32_t generation() const noexcept;
  std::uint64_t other_rows() const noexcept;
  std::uint64_t invalid_rows() const noexcept;
  std::uint64_t missing_rows() const noexcept;
  const std::string& column() const noexcept { return column_; }
  std::uint32_t max_values() const noexcept { return max_values_; }
  bool valid(std::uint32_t code) const noexcept { return code == kSliceOther || (code >= 1 && code <= values()); }

 private:
  struct Header;
  struct WindowCounts;
  SliceTable() = default;
  WindowCounts* slot_of(std::int64_t window_start_ns) const noexcept;
  std::string column_;
  std::uint32_t max_values_ = 0;
  std::int64_t window_ns_ = 0;
  void* base_ = nullptr;
  std::uint64_t bytes_ = 0;
  Header* h_ = nullptr;
  WindowCounts* windows_ = nullptr;
};

}  // namespace mltap::performance
