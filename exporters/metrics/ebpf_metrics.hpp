// System-event metrics (docs/metrics.md, "System events (eBPF)"), built at scrape time from the
// tracer's statistics. Takes a plain function returning bpf::TracerStats, so it builds without
// libbpf and works when the tracer is absent (then every probe reads as down).
#pragma once

#include <functional>
#include <vector>

#include <prometheus/collectable.h>

#include "core/tracer_stats.hpp"

namespace mltap::metrics {

class EbpfCollector : public prometheus::Collectable {
 public:
  using Source = std::function<core::TracerStats()>;
  explicit EbpfCollector(Source source) : source_(std::move(source)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

  // Bucket upper bounds (seconds) of the latency histograms: powers of two from ~1 us to ~34 s.
  static std::vector<double> latency_bounds_seconds();

 private:
  Source source_;
};

}  // namespace mltap::metrics
