// Converts kernel timestamps (CLOCK_BOOTTIME, what bpf_ktime_get_boot_ns() returns) to unix
// time. The offset REALTIME - BOOTTIME is sampled as the midpoint of two BOOTTIME reads around a
// REALTIME read, keeping the tightest of a few samples, and refreshed on every poll so that NTP
// steps are followed. An event is converted with the offset current when it is read, so an event
// older than a clock step is off by that step (docs/ebpf.md).
#pragma once

#include <cstdint>

namespace mltap::bpf {

class WallClock {
 public:
  WallClock() noexcept { refresh(); }
  void refresh() noexcept;
  std::int64_t offset_ns() const noexcept { return offset_ns_; }
  std::uint64_t to_unix_ns(std::uint64_t boot_ns) const noexcept {
    const std::int64_t v = static_cast<std::int64_t>(boot_ns) + offset_ns_;
    return v < 0 ? 0 : static_cast<std::uint64_t>(v);
  }
  static std::uint64_t boot_now_ns() noexcept;
  static std::uint64_t unix_now_ns() noexcept;

 private:
  std::int64_t offset_ns_ = 0;
};

}  // namespace mltap::bpf
