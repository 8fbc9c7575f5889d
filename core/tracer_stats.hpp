// What the tracer reports about itself: probe status, event and loss counters, latency
// histograms. Plain data, no libbpf: the metrics exporter includes it without the BPF build.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mltap::core {

// Slot i counts latencies in [2^i, 2^(i+1)) nanoseconds; the last slot holds everything above.
// Matches MLTAP_HIST_SLOTS in bpf/mltap_events.h.
inline constexpr std::size_t kHistogramSlots = 40;

struct Log2Histogram {
  std::array<std::uint64_t, kHistogramSlots> slots{};
  std::uint64_t count = 0;
  std::uint64_t sum_ns = 0;

  void add(const Log2Histogram& other) noexcept {
    for (std::size_t i = 0; i < kHistogramSlots; ++i) slots[i] += other.slots[i];
    count += other.count;
    sum_ns += other.sum_ns;
  }
  // Upper bound in ns of the slot holding quantile q (0..1); 0 when empty.
  std::uint64_t quantile_upper_ns(double q) const noexcept {
    std::uint64_t total = 0;
    for (auto s : slots) total += s;
    if (total == 0) return 0;
    const double rank = q * static_cast<double>(total);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kHistogramSlots; ++i) {
      seen += slots[i];
      if (static_cast<double>(seen) >= rank && slots[i] > 0) return std::uint64_t{1} << (i + 1);
    }
    return std::uint64_t{1} << kHistogramSlots;
  }
  // Upper bound of the highest non-empty slot.
  std::uint64_t max_upper_ns() const noexcept {
    for (std::size_t i = kHistogramSlots; i-- > 0;) {
      if (slots[i] > 0) return std::uint64_t{1} << (i + 1);
    }
    return 0;
  }
};

struct ProbeStatus {
  std::string probe;   // label value of mltap_ebpf_probe_up
  bool up = false;
  std::string method;  // "tp_btf", "raw_tp", "tracefs", "fanotify"; empty when down
  std::string reason;  // why it is down, or a note on a degraded probe
  bool by_configuration = false;  // down because the configuration asked for it (logged as info)
};

struct EventCount {
  std::string component;  // empty for host-wide events of untracked processes ("host")
  std::string kind;
  std::uint64_t count = 0;
};

struct TracerStats {
  std::vector<ProbeStatus> probes;
  std::vector<EventCount> events;
  std::map<std::string, std::uint64_t> lost_by_program;  // ring-buffer reserve failures etc.
  std::map<std::string, std::uint64_t> map_full;          // kernel map inserts refused
  std::map<std::string, Log2Histogram> runqueue_by_component;
  std::map<std::string, Log2Histogram> block_io_by_component;
  std::uint64_t tracked_processes = 0;  // in the kernel's tracked set now (incl. children)
  // Where the file watch's events got their actor's name: "proc" (alive when read),
  // "proc_names" (gone; the kernel's record of its fork or exec), "unknown" (gone, no record).
  std::map<std::string, std::uint64_t> file_actors;
};

// Run time of one BPF program, from the kernel's BPF statistics (run_cnt/run_time_ns are only
// counted while kernel.bpf_stats_enabled=1 or a BPF_ENABLE_STATS fd is held).
struct ProgramStats {
  std::string program;
  std::string probe;
  std::uint64_t run_count = 0;
  std::uint64_t run_time_ns = 0;
};

}  // namespace mltap::core
