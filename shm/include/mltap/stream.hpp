// mltap producer SDK for C++.
//
//   mltap::StreamOptions o;
//   o.component = "featuregen";
//   o.features = {"age", "amount"};
//   mltap::Stream s("shop/features", o);
//   float row[2] = {41.0f, 12.5f};
//   s.write(std::span<const float>(row));
//
// Guarantees: write() never blocks, never throws, never allocates and makes no system call; it
// is safe from any number of threads. When the ring cannot be created or its pages cannot be
// reserved (no /dev/shm, a full one) the stream leaves no file behind, still counts every write
// and drops the data (`rows_no_ring`, see stats()); a ring file truncated by another process
// under a running stream does not crash it either (its rows are counted as `rows_no_ring` from
// then on). Each thread writes its own lane of the ring, so threads never contend; a process with
// more writing threads than lanes (or than the file system can back) drops the extra threads'
// rows and counts them as `no_lane`. A row whose shape differs from the declared one (features,
// row_shape) is counted as bad input, not written.
//
// The first write of a thread claims a lane (reserving and faulting in its pages); later writes
// of a 1-D row take the SDK's fast path: about 20 ns for 64 float32 kept, a few ns sampled out
// (docs/benchmarks.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "mltap/export.h"
#include "mltap/format.hpp"

namespace mltap {

using format::DType;
using format::StreamKind;

struct StreamOptions {
  std::string component;               // default: this program's name (/proc/self/comm)
  StreamKind kind = StreamKind::features;
  std::vector<std::string> features;   // feature names (distinct); also declare the row shape [n]
  DType dtype = DType::invalid;        // declared dtype; invalid = not declared
  std::vector<std::uint32_t> row_shape;  // declared row shape; empty = from features or any
  // Rows per second captured in full; above it rows are sampled. 0 = unlimited.
  std::uint32_t sampling_budget = 20000;
  std::uint64_t ring_bytes = 4u << 20;  // data bytes per lane (power of two, >= 64 KiB)
  std::uint32_t lanes = 16;             // max threads writing at once
  // Namespace; default $MLTAP_NAMESPACE or "default". An invalid $MLTAP_NAMESPACE is an error
  // (the constructor throws naming it) rather than a silent fall-back into another namespace.
  std::string ns;
  std::string shm_dir;                  // default $MLTAP_SHM_DIR or /dev/shm
  // Record timestamps: coarse (default, ~6 ns, jiffy resolution) or precise (~30 ns).
  format::ClockKind clock = format::ClockKind::realtime_coarse;
  // Group allowed to read the ring (mode 0660 instead of 0600); empty = $MLTAP_SHM_GROUP or none.
  std::string shm_group;
  // Files this stream's output depends on (the model it serves, a vocabulary...): absolute
  // paths, at most 16. mltapd watches them and relates their changes to the stream's findings.
  std::vector<std::string> artifacts;
  // Model performance (kind predictions only; ABI 2.1): what the predictions are, and the stream
  // (kind labels) whose rows, joined by trace id, say what they should have been. mltapd then
  // reports realized accuracy, AUC, MAE... per prediction-time window (agent/performance).
  format::Task task = format::Task::none;
  std::string labels_stream;
};

enum class WriteResult : std::uint8_t {
  written,      // at least one row reached the ring; or zero rows were passed (a write of no
                // rows does nothing: no lane claimed, no counter moved, on any open stream)
  sampled_out,  // the sampler kept none of the rows
  dropped,      // lost: too large, bad input, no lane, or no ring
};

// Exact local counters of this process's writes to the stream (rows).
struct StreamStats {
  std::uint64_t rows_written = 0;
  std::uint64_t rows_committed = 0;
  std::uint64_t rows_sampled_out = 0;
  std::uint64_t rows_too_large = 0;
  std::uint64_t rows_bad_input = 0;
  std::uint64_t rows_no_lane = 0;
  std::uint64_t rows_no_ring = 0;
};

// A trace id travels with a row so that later stages can join streams on it; it also makes the
// sampling decision a function of the id, so every component keeps the same rows.
struct TraceId {
  std::uint64_t value;
};

namespace detail {
struct StreamCore;
struct Access;
template <class T>
constexpr DType dtype_of() noexcept {
  if constexpr (std::is_same_v<T, float>) return DType::float32;
  else if constexpr (std::is_same_v<T, double>) return DType::float64;
  else if constexpr (std::is_same_v<T, std::int32_t>) return DType::int32;
  else if constexpr (std::is_same_v<T, std::int64_t>) return DType::int64;
  else if constexpr (std::is_same_v<T, std::uint8_t>) return DType::uint8;
  else if constexpr (std::is_same_v<T, bool>) return DType::boolean;
  else if constexpr (std::is_same_v<T, std::int8_t>) return DType::int8;
  else if constexpr (std::is_same_v<T, std::int16_t>) return DType::int16;
  else if constexpr (std::is_same_v<T, std::uint16_t>) return DType::uint16;
  else if constexpr (std::is_same_v<T, std::uint32_t>) return DType::uint32;
  else if constexpr (std::is_same_v<T, std::uint64_t>) return DType::uint64;
  else return DType::invalid;
}
}  // namespace detail

class MLTAP_API Stream {
 public:
  // Throws std::invalid_argument for an invalid name or options (programming errors: duplicate
  // feature names, an invalid $MLTAP_NAMESPACE...), naming what is wrong. Failing to create the
  // ring is not an error: the stream runs without one and says so once on stderr.
  //
  // When no agent serves the namespace, opening a stream also removes the segments that this
  // user's dead producers left there (SIGKILLed processes cannot remove their own).
  explicit Stream(std::string_view name, StreamOptions options = {});
  ~Stream();
  Stream(Stream&&) noexcept;
  Stream& operator=(Stream&&) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // One row (a 1-D tensor of the declared features).
  template <class T>
  WriteResult write(std::span<const T> row) noexcept {
    constexpr DType dt = detail::dtype_of<T>();
    static_assert(dt != DType::invalid, "unsupported element type; use write_tensor");
    return write_row(row.data(), dt, row_length(row.size()), nullptr);
  }
  template <class T>
  WriteResult write(std::span<const T> row, TraceId trace_id) noexcept {
    constexpr DType dt = detail::dtype_of<T>();
    static_assert(dt != DType::invalid, "unsupported element type; use write_tensor");
    return write_row(row.data(), dt, row_length(row.size()), &trace_id.value);
  }
  // `rows` rows of `cols` values each, row-major; optional trace ids, one per row.
  template <class T>
  WriteResult write_batch(const T* data, std::size_t rows, std::uint32_t cols,
                          std::span<const std::uint64_t> trace_ids = {}) noexcept {
    constexpr DType dt = detail::dtype_of<T>();
    static_assert(dt != DType::invalid, "unsupported element type; use write_tensor");
    return write_tensor(data, dt, std::span<const std::uint32_t>(&cols, 1), rows, trace_ids);
  }
  // The general form: `rows` rows, each a C-contiguous tensor of `row_shape` (<= 6 dims) with
  // elements of `dtype`. `trace_ids` is empty or has `rows` entries.
  WriteResult write_tensor(const void* data, DType dtype, std::span<const std::uint32_t> row_shape,
                           std::size_t rows, std::span<const std::uint64_t> trace_ids) noexcept;

  // A named flag set by mltapd's `producer-flag` reaction (0 when unset). Cheap enough to call
  // per request: a cached slot is re-read only when the control block changes.
  bool flag(std::string_view name) const noexcept { return flag_value(name) != 0; }
  std::uint32_t flag_value(std::string_view name) const noexcept;
  // Calls `callback(value)` from a background thread (started on first use, polling every
  // 100 ms) whenever the flag's value changes. Returns false for an invalid flag name.
  bool on_flag(std::string_view name, std::function<void(std::uint32_t)> callback);

  StreamStats stats() const noexcept;
  // Whether the ring exists (false: writes are counted and dropped).
  bool has_ring() const noexcept;
  const std::string& name() const noexcept;
  // The segment file backing this stream (empty without a ring).
  std::string segment_path() const;

 private:
  // One 1-D row of `n` elements, trace id optional: the fast path behind write() and the C ABI.
  WriteResult write_row(const void* data, DType dtype, std::uint32_t n,
                        const std::uint64_t* trace_id) noexcept;
  // Lengths beyond the format's 32-bit dimension saturate (and are then counted as too large).
  static constexpr std::uint32_t row_length(std::size_t n) noexcept {
    return n > 0xFFFFFFFFu ? 0xFFFFFFFFu : static_cast<std::uint32_t>(n);
  }

  friend struct detail::Access;
  std::unique_ptr<detail::StreamCore> core_;
};

// SDK identification written into segment headers ("cpp/0.1.0"); bindings set their own.
MLTAP_API void set_sdk_name(std::string_view sdk);

}  // namespace mltap
