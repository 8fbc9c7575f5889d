#include "exporters/metrics/state_metrics.hpp"

#include "exporters/metrics/family.hpp"

namespace mltap::metrics {

std::vector<prometheus::MetricFamily> StateCollector::Collect() const {
  const core::StateWriteCounts c = source_();
  FamilyBuilder writes("mltap_state_writes_total",
                       "State documents written to the state directory, and attempts that failed.",
                       prometheus::MetricType::Counter);
  writes.add({{"result", "ok"}}, static_cast<double>(c.written));
  writes.add({{"result", "failed"}}, static_cast<double>(c.failed));
  FamilyBuilder pending("mltap_state_pending_documents",
                        "State documents held in memory, waiting to be written.",
                        prometheus::MetricType::Gauge);
  pending.add({}, static_cast<double>(c.pending));
  FamilyBuilder failing("mltap_state_write_failing",
                        "1 while writing the state directory fails (full, read-only, missing).",
                        prometheus::MetricType::Gauge);
  failing.add({}, c.failing ? 1.0 : 0.0);
  return {writes.take(), pending.take(), failing.take()};
}

}  // namespace mltap::metrics
