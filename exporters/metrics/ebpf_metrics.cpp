#include "exporters/metrics/ebpf_metrics.hpp"

#include <cmath>
#include <limits>

#include "exporters/metrics/family.hpp"

namespace mltap::metrics {
namespace {

// Histogram buckets le = 2^k ns for k in [kFirst, kLast], then +Inf. Kernel slot i holds
// [2^i, 2^(i+1)) ns, so it falls in the bucket of 2^(i+1).
constexpr std::size_t kFirst = 10;  // 1.024 us
constexpr std::size_t kLast = 35;   // 34.4 s

void add_latency(FamilyBuilder& fb, const std::map<std::string, core::Log2Histogram>& by_component) {
  const std::vector<double> bounds = EbpfCollector::latency_bounds_seconds();
  for (const auto& [component, h] : by_component) {
    std::vector<std::uint64_t> counts(bounds.size(), 0);
    for (std::size_t i = 0; i < core::kHistogramSlots; ++i) {
      const std::size_t k = i + 1;  // slot's upper bound is 2^k ns
      std::size_t b = k <= kFirst ? 0 : k - kFirst;
      if (k > kLast) b = bounds.size() - 1;  // +Inf
      counts[b] += h.slots[i];
    }
    fb.add_histogram({{"component", component}}, bounds, counts, static_cast<double>(h.sum_ns) / 1e9);
  }
}

}  // namespace

std::vector<double> EbpfCollector::latency_bounds_seconds() {
  std::vector<double> b;
  for (std::size_t k = kFirst; k <= kLast; ++k) b.push_back(std::ldexp(1.0, static_cast<int>(k)) / 1e9);
  b.push_back(std::numeric_limits<double>::infinity());
  return b;
}

std::vector<prometheus::MetricFamily> EbpfCollector::Collect() const {
  const core::TracerStats s = source_ ? source_() : core::TracerStats{};
  std::vector<prometheus::MetricFamily> out;

  FamilyBuilder up("mltap_ebpf_probe_up", "1 if the eBPF probe (or fanotify watch) is loaded and attached",
                   prometheus::MetricType::Gauge);
  for (const auto& p : s.probes) up.add({{"probe", p.probe}}, p.up ? 1 : 0);
  up.move_into(out);

  FamilyBuilder wanted("mltap_ebpf_probe_enabled",
                       "1 if the configuration asks for the probe (file_watch: and there is a directory to watch)",
                       prometheus::MetricType::Gauge);
  for (const auto& p : s.probes) wanted.add({{"probe", p.probe}}, p.by_configuration ? 0 : 1);
  wanted.move_into(out);

  FamilyBuilder events("mltap_ebpf_events_total", "System events of tracked processes (component \"\": host-wide)",
                       prometheus::MetricType::Counter);
  for (const auto& e : s.events) events.add({{"component", e.component}, {"kind", e.kind}}, static_cast<double>(e.count));
  events.move_into(out);

  FamilyBuilder lost("mltap_ebpf_events_lost_total",
                     "Events lost: ring-buffer reserve failures per BPF program, fanotify queue overflows, malformed records",
                     prometheus::MetricType::Counter);
  for (const auto& [prog, n] : s.lost_by_program) lost.add({{"program", prog}}, static_cast<double>(n));
  lost.move_into(out);

  FamilyBuilder full("mltap_ebpf_map_full_total",
                     "Kernel map inserts refused because the map was full (something went untracked or unmeasured)",
                     prometheus::MetricType::Counter);
  for (const auto& [map, n] : s.map_full) full.add({{"map", map}}, static_cast<double>(n));
  full.move_into(out);

  FamilyBuilder actors("mltap_ebpf_file_actors_total",
                       "Watched-file events by where their actor's name came from: /proc (alive when read), "
                       "the kernel's record of its exec (gone), unknown (gone, no record)",
                       prometheus::MetricType::Counter);
  for (const auto& [source, n] : s.file_actors) actors.add({{"source", source}}, static_cast<double>(n));
  actors.move_into(out);

  FamilyBuilder tracked("mltap_ebpf_tracked_processes",
                        "Processes in the kernel's tracked set (producers and their children)",
                        prometheus::MetricType::Gauge);
  tracked.add({}, static_cast<double>(s.tracked_processes));
  tracked.move_into(out);

  FamilyBuilder runq("mltap_process_runqueue_latency_seconds",
                     "Time tracked processes waited runnable for a CPU", prometheus::MetricType::Histogram);
  add_latency(runq, s.runqueue_by_component);
  runq.move_into(out);

  FamilyBuilder bio("mltap_process_block_io_latency_seconds",
                    "Block I/O latency of requests submitted by tracked processes", prometheus::MetricType::Histogram);
  add_latency(bio, s.block_io_by_component);
  bio.move_into(out);
  return out;
}

}  // namespace mltap::metrics
