// Run-queue and block I/O latency: the kernel keeps cumulative log2 histograms per process; here
// their changes are folded into per-component totals (metrics) and per-process intervals, whose
// p99 beyond a threshold becomes a derived event.
#include <bpf/bpf.h>

#include "bpf/src/tracer_impl.hpp"

namespace mltap::bpf {

using core::EventKind;
using core::SystemEvent;
using core::Log2Histogram;
using core::kHistogramSlots;

namespace {

Log2Histogram delta_of(const mltap_hist& now, const mltap_hist* before) {
  Log2Histogram d;
  bool reset = false;
  if (before) {
    for (std::size_t i = 0; i < kHistogramSlots; ++i) {
      if (now.slots[i] < before->slots[i]) reset = true;
    }
    if (now.count < before->count) reset = true;
  }
  const mltap_hist* b = (before && !reset) ? before : nullptr;
  for (std::size_t i = 0; i < kHistogramSlots; ++i) d.slots[i] = now.slots[i] - (b ? b->slots[i] : 0);
  d.count = now.count - (b ? b->count : 0);
  d.sum_ns = now.sum_ns - (b ? b->sum_ns : 0);
  return d;
}

}  // namespace

// Reads the kernel's per-process histograms and folds the change into the component totals.
// With `final_pid`, only that process, whose entries are then deleted (it has exited).
void Tracer::Impl::collect_histograms(std::optional<std::uint32_t> final_pid) {
  collect_map(runq_fd, runq, final_pid);
  collect_map(bio_fd, bio, final_pid);
}

void Tracer::Impl::collect_map(int fd, HistBook& book, std::optional<std::uint32_t> final_pid) {
  if (fd < 0) return;
  const std::vector<std::uint32_t> keys =
      final_pid ? std::vector<std::uint32_t>{*final_pid} : map_keys(fd, 1u << 20);
  for (std::uint32_t pid : keys) {
    mltap_hist h{};
    if (bpf_map_lookup_elem(fd, &pid, &h) != 0) continue;
    std::optional<std::uint32_t> comp;
    bool alive = false;
    {
      std::lock_guard lk(mu);
      if (auto it = procs.find(pid); it != procs.end()) {
        comp = it->second.component_id;
        alive = true;
      }
    }
    if (!comp && tracked_fd >= 0) {
      mltap_tracked v{};
      if (bpf_map_lookup_elem(tracked_fd, &pid, &v) == 0) {
        comp = v.component_id;
        alive = true;
      }
    }
    std::lock_guard lk(mu);
    auto last = book.last.find(pid);
    const Log2Histogram d = delta_of(h, last == book.last.end() ? nullptr : &last->second);
    const std::string name = comp ? component_name(*comp) : std::string("unknown");
    book.by_component[name.empty() ? std::string("unknown") : name].add(d);
    book.interval[pid].add(d);
    if (final_pid || !alive) {
      book.last.erase(pid);
      book.interval.erase(pid);
      bpf_map_delete_elem(fd, &pid);
    } else {
      book.last[pid] = h;
    }
  }
}

// Derived events: a tracked process whose p99 over the last interval reached the threshold.
void Tracer::Impl::emit_latency_summaries(std::uint64_t interval_ns) {
  std::vector<SystemEvent> out;
  auto scan = [&](HistBook& book, EventKind kind, std::chrono::nanoseconds threshold) {
    for (auto& [pid, h] : book.interval) {
      if (threshold.count() > 0 && h.count >= cfg.latency_min_samples &&
          h.quantile_upper_ns(0.99) >= static_cast<std::uint64_t>(threshold.count())) {
        SystemEvent ev;
        ev.kind = kind;
        ev.source = "derived";
        ev.boot_ns = WallClock::boot_now_ns();
        ev.unix_ns = clock.to_unix_ns(ev.boot_ns);
        ev.subject.pid = pid;
        ev.tracked = true;
        if (auto it = procs.find(pid); it != procs.end()) {
          ev.subject.start_ticks = it->second.start_ticks;
          ev.subject.comm = it->second.comm;
          ev.component = component_name(it->second.component_id);
          ev.root.pid = it->second.root_pid;
          ev.root.start_ticks = it->second.root_start_ticks;
          if (auto r = procs.find(ev.root.pid); r != procs.end()) ev.root.comm = r->second.comm;
        }
        ev.latency.interval_ns = interval_ns;
        ev.latency.samples = h.count;
        ev.latency.p50_ns = h.quantile_upper_ns(0.5);
        ev.latency.p99_ns = h.quantile_upper_ns(0.99);
        ev.latency.max_ns = h.max_upper_ns();
        out.push_back(std::move(ev));
      }
    }
    book.interval.clear();
  };
  {
    std::lock_guard lk(mu);
    scan(runq, EventKind::runqueue_latency, cfg.runqueue_report_threshold);
    scan(bio, EventKind::block_io_latency, cfg.block_io_report_threshold);
  }
  for (const auto& ev : out) deliver(ev);
}

}  // namespace mltap::bpf
