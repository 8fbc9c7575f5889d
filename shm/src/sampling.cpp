// Sampling (FORMAT.md "Sampling"): windows of 2^28 ns. When a window starts, the first writing
// thread sums the exact rows_written of all lanes, estimates the rate and sets the keep share for
// the new window; a lane that keeps more than the whole budget within one window re-estimates at
// once (bursts, and the first window, whose rate is unknown).
#include <algorithm>

#include "stream_core.hpp"

namespace mltap::detail {

using namespace mltap::format;

WriteResult StreamCore::tick(LaneWriter& w) noexcept {
  const std::uint64_t now = now_ns(precise_clock);
  w.last_now = now;
  const std::uint64_t window = now >> kWindowShift;
  if (window != window_id.load(std::memory_order_relaxed)) roll_window(window, now);
  return WriteResult::sampled_out;
}

std::uint64_t StreamCore::sum_rows_written() const noexcept {
  std::uint64_t sum = rows_written_unlaned.load(std::memory_order_relaxed);
  const std::uint32_t n = std::min(lanes_in_use_hint.load(std::memory_order_relaxed), lane_count);
  for (std::uint32_t i = 0; i < n && i < writers.size(); ++i) {
    sum += aref(writers[i].header->rows_written).load(std::memory_order_relaxed);
  }
  return sum;
}

// Once per window, by whichever thread sees the new window first.
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

// The agent's sampling reaction may raise the share (ControlBlock: validated, it is untrusted).
void StreamCore::set_keep_share(double keep, std::uint64_t id) noexcept {
  if (control && keep < 1.0 && !ring_lost.load(std::memory_order_relaxed)) {
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

}  // namespace mltap::detail
