// The general write path: any number of rows of any shape, with or without trace ids. Stages:
//   acquire the lane        (or count the rows as lost: no ring, no lane)
//   count the rows written  (exact, sampled or not)
//   check the description   (bad input, declared shape, too large)
//   sample                  (per row, before any copy)
//   copy the kept rows      (records of at most max_record_bytes, published one by one)
// The steady-state single row takes write_row instead (write_path.hpp), which shares the
// record-level helpers.
#include <algorithm>

#include "write_path.hpp"

namespace mltap::detail {
namespace {

using namespace mltap::format;

// Rows that reached no lane: no ring (never created, or lost to a truncation), or every lane
// taken (or not reservable).
WriteResult count_unlaned(StreamCore& c, std::uint64_t rows) noexcept {
  c.rows_written_unlaned.fetch_add(rows, std::memory_order_relaxed);
  if (!c.base || c.ring_lost.load(std::memory_order_relaxed)) {
    c.rows_no_ring.fetch_add(rows, std::memory_order_relaxed);
  } else {
    c.rows_no_lane.fetch_add(rows, std::memory_order_relaxed);
    aref(c.header->no_lane_rows).fetch_add(rows, std::memory_order_relaxed);
  }
  return WriteResult::dropped;
}

WriteResult count_bad_input(LaneWriter& w, std::uint64_t rows) noexcept {
  w.rows_bad_input += rows;
  aref(w.header->rows_bad_input).store(w.rows_bad_input, std::memory_order_relaxed);
  return WriteResult::dropped;
}

WriteResult count_too_large(LaneWriter& w, std::uint64_t rows) noexcept {
  w.rows_too_large += rows;
  aref(w.header->rows_too_large).store(w.rows_too_large, std::memory_order_relaxed);
  return WriteResult::dropped;
}

enum class Check { ok, bad_input, too_large };

// Validates the caller's description of the rows; on success the lane's cached shape is this
// one and w.valid_row_bytes its size. A description identical to the cached one is not
// re-validated.
Check check_rows(const StreamCore& c, LaneWriter& w, const void* data, DType dtype,
                 std::span<const std::uint32_t> shape, std::size_t rows,
                 std::span<const std::uint64_t> trace_ids) noexcept {
  if (data == nullptr || (!trace_ids.empty() && trace_ids.size() != rows) || rows > 0xFFFFFFFFu) {
    return Check::bad_input;
  }
  bool same = dtype == w.valid_dtype && shape.size() == w.valid_ndim;
  for (std::size_t d = 0; same && d < shape.size(); ++d) same = shape[d] == w.valid_dims[d];
  if (same) return Check::ok;

  const std::uint32_t esize = dtype_size(dtype);
  if (esize == 0 || shape.empty() || shape.size() > kMaxRowDims) return Check::bad_input;
  // A stream that declared its row shape (features, row_shape) takes rows of that shape only.
  if (!c.declared_shape.empty() &&
      !std::equal(shape.begin(), shape.end(), c.declared_shape.begin(), c.declared_shape.end())) {
    return Check::bad_input;
  }
  std::uint64_t row_bytes = esize;
  bool too_large = false;
  for (std::uint32_t d : shape) {
    if (d == 0) return Check::bad_input;
    row_bytes *= d;
    if (row_bytes > w.max_record) {  // also keeps the product from overflowing
      too_large = true;
      row_bytes = w.max_record + 1;
    }
  }
  if (too_large || row_bytes + 8 + sizeof(RecordHeader) > w.max_record) return Check::too_large;
  w.valid_dtype = dtype;
  w.valid_ndim = static_cast<std::uint8_t>(shape.size());
  std::fill(std::begin(w.valid_dims), std::end(w.valid_dims), 0u);
  std::copy(shape.begin(), shape.end(), w.valid_dims);
  w.valid_row_bytes = row_bytes;
  w.row_key = shape.size() == 1 ? LaneWriter::row_key_of(dtype, shape[0]) : 0;
  return Check::ok;
}

// The per-row sampling decision: a trace id's hash against the threshold, else an accumulator
// that keeps an exact, evenly spaced share. Replayable from a saved accumulator (copy stage).
struct Sampler {
  bool sampling = false;
  std::uint64_t threshold = kKeepAll;
  std::uint32_t fraction = 0;
  std::span<const std::uint64_t> trace_ids;

  bool keep(std::size_t r, std::uint64_t& acc) const noexcept {
    if (!sampling) return true;
    if (!trace_ids.empty()) return mix64(trace_ids[r]) <= threshold;
    const std::uint64_t before = acc;
    acc += fraction;
    return (acc >> 32) != (before >> 32);
  }
};

// Decides for every row before anything is copied; returns how many are kept, counts the rest.
std::size_t sample_rows(StreamCore& c, LaneWriter& w, std::size_t rows,
                        std::span<const std::uint64_t> trace_ids, Sampler& s,
                        std::uint64_t& acc_start) noexcept {
  s.threshold = c.keep_threshold.load(std::memory_order_relaxed);
  s.fraction = c.keep_fraction32.load(std::memory_order_relaxed);
  s.sampling = s.threshold != kKeepAll;
  s.trace_ids = trace_ids;
  acc_start = w.sample_acc;
  if (!s.sampling) return rows;
  std::uint64_t acc = acc_start;
  std::size_t kept = 0;
  for (std::size_t r = 0; r < rows; ++r) kept += s.keep(r, acc) ? 1 : 0;
  w.sample_acc = acc;
  if (kept < rows) count_sampled_out(w, rows - kept);
  // Nothing kept reads the clock: look at it on every 16th such write (write_row: row).
  if (kept == 0 && (++w.clock_skip & kClockSkipMask) == 0) c.tick(w);
  return kept;
}

// Copies the kept rows into records of at most max_record_bytes and publishes each.
void copy_records(StreamCore& c, LaneWriter& w, const std::uint8_t* src, DType dtype,
                  std::size_t kept, std::span<const std::uint64_t> trace_ids, const Sampler& s,
                  std::uint64_t acc) noexcept {
  const std::uint64_t row_bytes = w.valid_row_bytes;
  const std::uint64_t per_row = row_bytes + (trace_ids.empty() ? 0 : 8);
  const std::uint64_t now = record_time(c, w, kept);
  // Most writes fit one record: skip the division that splitting needs.
  const std::uint64_t max_rows_per_record =
      sizeof(RecordHeader) + kept * per_row <= w.max_record
          ? kept
          : (w.max_record - sizeof(RecordHeader)) / per_row;
  std::size_t next_row = 0;  // next source row to consider
  std::size_t remaining = kept;
  while (remaining > 0) {
    const std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(remaining, max_rows_per_record));
    const std::uint64_t payload = chunk * row_bytes;
    const std::uint64_t tids = trace_ids.empty() ? 0 : chunk * 8;
    const std::uint64_t size = sizeof(RecordHeader) + tids + payload;
    const std::uint64_t seq = w.seq;
    const std::uint64_t pos = w.pos;
    const std::uint64_t end = pos + align_up(size, kRecordAlign);
    if (end > w.reserved_pos || seq >= w.reserved_seq) extend_reservation(w, seq, end);
    std::uint64_t off = put_record_header(w, pos, seq, now, chunk, payload, tids, dtype);
    if (!s.sampling) {
      // Nothing sampled out: contiguous copies of the chunk's trace ids and rows.
      if (tids) off = ring_put(w, off, trace_ids.data() + next_row, tids);
      ring_put(w, off, src + next_row * row_bytes, payload);
      next_row += chunk;
    } else {
      // Gather the kept rows (trace ids first, then payload), replaying the decisions.
      const std::size_t start = next_row;
      std::size_t r = start;
      if (tids) {
        std::uint64_t acc_ids = acc;
        for (std::size_t taken = 0; taken < chunk; ++r) {
          if (s.keep(r, acc_ids)) {
            off = ring_put(w, off, &trace_ids[r], 8);
            ++taken;
          }
        }
        r = start;
      }
      for (std::size_t taken = 0; taken < chunk; ++r) {
        if (s.keep(r, acc)) {
          off = ring_put(w, off, src + r * row_bytes, row_bytes);
          ++taken;
        }
      }
      next_row = r;
    }
    commit_record(w, seq, pos, end, size, chunk);
    remaining -= chunk;
  }
}

}  // namespace

WriteResult write_row_general(StreamCore& c, const void* data, DType dtype, std::uint32_t n,
                              const std::uint64_t* trace_id) noexcept {
  return write_general(c, data, dtype, std::span<const std::uint32_t>(&n, 1), 1,
                       trace_id ? std::span<const std::uint64_t>(trace_id, 1)
                                : std::span<const std::uint64_t>());
}

WriteResult commit_row(StreamCore& c, LaneWriter& w, const void* data, DType dtype,
                       const std::uint64_t* trace_id) noexcept {
  const std::uint64_t now = record_time(c, w, 1);
  const std::uint64_t row_bytes = w.valid_row_bytes;
  const std::uint64_t tids = trace_id ? 8 : 0;
  const std::uint64_t size = sizeof(RecordHeader) + tids + row_bytes;
  const std::uint64_t seq = w.seq;
  const std::uint64_t pos = w.pos;
  const std::uint64_t end = pos + align_up(size, kRecordAlign);
  if (end > w.reserved_pos || seq >= w.reserved_seq) [[unlikely]] extend_reservation(w, seq, end);
  std::uint64_t off = put_record_header(w, pos, seq, now, 1, row_bytes, tids, dtype);
  if (trace_id) off = ring_put(w, off, trace_id, 8);
  ring_put(w, off, data, row_bytes);
  commit_record(w, seq, pos, end, size, 1);
  return WriteResult::written;
}

void extend_reservation(LaneWriter& w, std::uint64_t seq, std::uint64_t end) noexcept {
  const std::uint64_t ring = w.data_mask + 1;
  const std::uint64_t entries = w.index_mask + 1;
  w.reserved_pos = std::max(w.reserved_pos, end + (ring >> kReserveAheadShift));
  w.reserved_seq = std::max(w.reserved_seq, seq + 1 + (entries >> kReserveAheadShift));
  aref(w.header->reserve_seq).store(w.reserved_seq, std::memory_order_relaxed);
  aref(w.header->reserve_pos).store(w.reserved_pos, std::memory_order_relaxed);
  // A reader that sees any byte written after this sees the reservation that covers it.
  std::atomic_thread_fence(std::memory_order_release);
}

WriteResult write_general(StreamCore& c, const void* data, DType dtype,
                          std::span<const std::uint32_t> row_shape, std::size_t rows,
                          std::span<const std::uint64_t> trace_ids) noexcept {
  // Zero rows: nothing to write and nothing lost, whatever the ring's state; no lane is claimed
  // for it and no counter moves (WriteResult::written in stream.hpp).
  if (rows == 0) return WriteResult::written;
  LaneWriter* lane = c.lane_for_this_thread();
  if (!lane) return count_unlaned(c, rows);
  LaneWriter& w = *lane;
  w.rows_written += rows;
  aref(w.header->rows_written).store(w.rows_written, std::memory_order_relaxed);

  switch (check_rows(c, w, data, dtype, row_shape, rows, trace_ids)) {
    case Check::ok: break;
    case Check::bad_input: return count_bad_input(w, rows);
    case Check::too_large: return count_too_large(w, rows);
  }
  Sampler sampler;
  std::uint64_t acc = 0;
  const std::size_t kept = sample_rows(c, w, rows, trace_ids, sampler, acc);
  if (kept == 0) return WriteResult::sampled_out;
  copy_records(c, w, static_cast<const std::uint8_t*>(data), dtype, kept, trace_ids, sampler, acc);
  return WriteResult::written;
}

}  // namespace mltap::detail
