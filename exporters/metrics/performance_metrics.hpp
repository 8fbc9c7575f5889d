// Model performance metrics (docs/metrics.md, "Performance"), built at scrape time from the
// performance component's latest snapshot. Windows are not a label (unbounded): the realized
// metrics are those of each stream's latest window that has labels, whose start is a gauge of
// its own; every window is in the HTTP API (/api/v1/performance/STREAM).
#pragma once

#include <functional>
#include <memory>

#include <prometheus/collectable.h>

#include "core/performance_state.hpp"

namespace mltap::metrics {

class PerformanceCollector : public prometheus::Collectable {
 public:
  using SnapshotSource = std::function<std::shared_ptr<const core::PerformanceSnapshot>()>;
  explicit PerformanceCollector(SnapshotSource source) : source_(std::move(source)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  SnapshotSource source_;
};

}  // namespace mltap::metrics
