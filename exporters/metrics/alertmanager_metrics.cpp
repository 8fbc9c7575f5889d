#include "exporters/metrics/alertmanager_metrics.hpp"

#include "exporters/metrics/family.hpp"

namespace mltap::metrics {

std::vector<prometheus::MetricFamily> AlertmanagerPushCollector::Collect() const {
  const core::AlertPushCounts c = source_();
  FamilyBuilder f("mltap_alertmanager_pushes_total",
                  "Direct pushes of findings to Alertmanager, by result.",
                  prometheus::MetricType::Counter);
  f.add({{"result", "ok"}}, static_cast<double>(c.ok));
  f.add({{"result", "failed"}}, static_cast<double>(c.failed));
  f.add({{"result", "rejected"}}, static_cast<double>(c.rejected));
  return {f.take()};
}

}  // namespace mltap::metrics
