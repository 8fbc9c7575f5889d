// The producer's write paths (FORMAT.md "Write protocol"). write_row is the fast path of every
// SDK (C++ write(), the C ABI, Python's single records): inline here so that each entry point
// compiles it into itself, without a call. It handles the steady state only: a thread whose lane
// is in the stream's cache, writing a row of the shape its lane last accepted. Everything else
// (a thread's first write, another shape, batches, no ring, a forked child) goes to
// write_general (write.cpp), which validates, claims, counts and then writes the same way.
#pragma once

#include <cstring>

#include "stream_core.hpp"

namespace mltap::detail {

// The general path: any rows, shapes and trace ids (write.cpp).
WriteResult write_general(StreamCore& c, const void* data, format::DType dtype,
                          std::span<const std::uint32_t> row_shape, std::size_t rows,
                          std::span<const std::uint64_t> trace_ids) noexcept;

// Announces the lane's next reservation before the bytes it covers: 1/16 of the index and of
// the ring ahead of the record at `seq` ending at `end` (write.cpp).
void extend_reservation(LaneWriter& w, std::uint64_t seq, std::uint64_t end) noexcept;

// Rows kept within the current window, counted per lane: past the stream's whole budget within
// one window (a burst, or the first window, whose rate is not known yet) the rate is estimated
// from the window so far rather than at its end.
inline void note_kept_rows(StreamCore& c, LaneWriter& w, std::uint64_t window, std::uint64_t now,
                           std::uint64_t rows) noexcept {
  if (c.allowed_per_window == 0) return;
  if (w.window_id != window) {
    w.window_id = window;
    w.window_rows = 0;
    w.next_estimate_at = c.allowed_per_window;
  }
  w.window_rows += rows;
  if (w.window_rows > w.next_estimate_at) [[unlikely]] {
    w.next_estimate_at = w.window_rows * 2;
    c.estimate_mid_window(window, now);
  }
}

// The timestamp of a kept record; rolls the sampling window when it changed.
inline std::uint64_t record_time(StreamCore& c, LaneWriter& w, std::uint64_t rows) noexcept {
  const std::uint64_t now = now_ns(c.precise_clock);
  w.last_now = now;
  const std::uint64_t window = now >> kWindowShift;
  if (window != c.window_id.load(std::memory_order_relaxed)) [[unlikely]] c.roll_window(window, now);
  note_kept_rows(c, w, window, now, rows);
  return now;
}

// Copies `n` bytes to ring position `off` (which may wrap); returns the position after them.
inline std::uint64_t ring_put(const LaneWriter& w, std::uint64_t off, const void* bytes,
                              std::uint64_t n) noexcept {
  const std::uint64_t ring = w.data_mask + 1;
  if (off + n <= ring) [[likely]] {
    std::memcpy(w.data + off, bytes, n);
  } else {
    const std::uint64_t first = ring - off;
    std::memcpy(w.data + off, bytes, first);
    std::memcpy(w.data, static_cast<const std::uint8_t*>(bytes) + first, n - first);
  }
  return (off + n) & w.data_mask;
}

// Writes the 64-byte record header in place (64-aligned in a ring of a multiple of 64 bytes: it
// never wraps) and returns the ring offset after it.
inline std::uint64_t put_record_header(const LaneWriter& w, std::uint64_t pos, std::uint64_t seq,
                                       std::uint64_t now, std::uint64_t rows,
                                       std::uint64_t payload, std::uint64_t tids,
                                       format::DType dtype) noexcept {
  const std::uint64_t off = pos & w.data_mask;
  auto& rh = *reinterpret_cast<format::RecordHeader*>(w.data + off);
  rh.seq = seq;
  rh.timestamp_ns = now;
  rh.rows = static_cast<std::uint32_t>(rows);
  rh.payload_bytes = static_cast<std::uint32_t>(payload);
  rh.dtype = static_cast<std::uint16_t>(dtype);
  rh.ndim = w.valid_ndim;
  rh.flags = tids ? format::kRecordHasTraceIds : 0;
  rh.payload_offset = static_cast<std::uint32_t>(sizeof(format::RecordHeader) + tids);
  std::memcpy(rh.dims, w.valid_dims, sizeof rh.dims);  // the validated shape, zero padded
  rh.reserved[0] = 0;
  rh.reserved[1] = 0;
  return (off + sizeof rh) & w.data_mask;
}

// Publishes a record whose bytes are in the ring: index entry, then the commit (release), then
// the owner's counters.
inline void commit_record(LaneWriter& w, std::uint64_t seq, std::uint64_t pos,
                          std::uint64_t end, std::uint64_t size, std::uint64_t rows) noexcept {
  format::LaneHeader& h = *w.header;
  format::IndexEntry& e = w.index[seq & w.index_mask];
  e.seq = seq;
  e.pos = pos;
  e.size = static_cast<std::uint32_t>(size);
  e.rows = static_cast<std::uint32_t>(rows);
  e.rows_before = w.rows_committed;
  aref(h.commit_seq).store(seq + 1, std::memory_order_release);
  aref(h.next_pos).store(end, std::memory_order_relaxed);
  w.seq = seq + 1;
  w.pos = end;
  w.rows_committed += rows;
  w.bytes_committed += size;
  aref(h.rows_committed).store(w.rows_committed, std::memory_order_relaxed);
  aref(h.records_committed).store(w.seq, std::memory_order_relaxed);
  aref(h.bytes_committed).store(w.bytes_committed, std::memory_order_relaxed);
}

inline void count_sampled_out(LaneWriter& w, std::uint64_t rows) noexcept {
  w.rows_sampled_out += rows;
  aref(w.header->rows_sampled_out).store(w.rows_sampled_out, std::memory_order_relaxed);
}

// The record of one kept row (write.cpp; out of line: it needs the registers and the stack
// frame that the sampled-out path does without).
WriteResult commit_row(StreamCore& c, LaneWriter& w, const void* data, format::DType dtype,
                       const std::uint64_t* trace_id) noexcept;
// write_row's way to the general path (write.cpp), with scalars only: the fast path then needs
// no stack frame of its own.
WriteResult write_row_general(StreamCore& c, const void* data, format::DType dtype,
                              std::uint32_t n, const std::uint64_t* trace_id) noexcept;

// One row of `n` elements of `dtype`, with an optional trace id. What runs when the row is
// sampled out is all of this: a cache lookup, a shape compare, a hash (or an accumulator step),
// a compare and two counters.
[[gnu::always_inline]] inline WriteResult write_row(StreamCore& c, const void* data,
                                                    format::DType dtype, std::uint32_t n,
                                                    const std::uint64_t* trace_id) noexcept {
  LaneWriter* lane = c.cached_lane();
  if (lane == nullptr || data == nullptr || lane->row_key != LaneWriter::row_key_of(dtype, n))
      [[unlikely]] {
    return write_row_general(c, data, dtype, n, trace_id);
  }
  LaneWriter& w = *lane;
  aref(w.header->rows_written).store(++w.rows_written, std::memory_order_relaxed);
  const std::uint64_t threshold = c.keep_threshold.load(std::memory_order_relaxed);
  if (threshold != kKeepAll) {
    bool keep;
    if (trace_id) {
      keep = mix64(*trace_id) <= threshold;
    } else {
      const std::uint64_t before = w.sample_acc;
      w.sample_acc += c.keep_fraction32.load(std::memory_order_relaxed);
      keep = (w.sample_acc >> 32) != (before >> 32);
    }
    if (!keep) {
      count_sampled_out(w, 1);
      // A kept row reads the clock for its timestamp; sampled-out rows on every 16th (counted by
      // their own counter), so that the window (and the keep share with it) still changes when
      // nothing is kept.
      if ((w.rows_sampled_out & kClockSkipMask) == 0) [[unlikely]] return c.tick(w);
      return WriteResult::sampled_out;
    }
  }
  return commit_row(c, w, data, dtype, trace_id);
}

}  // namespace mltap::detail
