#include "bpf/src/wall_clock.hpp"

#include <ctime>
#include <limits>

namespace mltap::bpf {
namespace {

std::int64_t read_ns(clockid_t id) noexcept {
  timespec ts{};
  clock_gettime(id, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

void WallClock::refresh() noexcept {
  std::int64_t best_gap = std::numeric_limits<std::int64_t>::max();
  for (int i = 0; i < 3; ++i) {
    const std::int64_t b1 = read_ns(CLOCK_BOOTTIME);
    const std::int64_t r = read_ns(CLOCK_REALTIME);
    const std::int64_t b2 = read_ns(CLOCK_BOOTTIME);
    const std::int64_t gap = b2 - b1;
    if (gap < best_gap) {
      best_gap = gap;
      offset_ns_ = r - (b1 + gap / 2);
    }
  }
}

std::uint64_t WallClock::boot_now_ns() noexcept {
  return static_cast<std::uint64_t>(read_ns(CLOCK_BOOTTIME));
}

std::uint64_t WallClock::unix_now_ns() noexcept {
  return static_cast<std::uint64_t>(read_ns(CLOCK_REALTIME));
}

}  // namespace mltap::bpf
