// mltap_retention_*: the retained samples (agent/retention, docs/lineage.md), read at scrape time
// from the stats a provider returns.
#pragma once

#include <functional>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "core/retention_state.hpp"

namespace mltap::metrics {

class RetentionCollector : public prometheus::Collectable {
 public:
  using Source = std::function<core::RetentionStats()>;
  explicit RetentionCollector(Source source) : source_(std::move(source)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  Source source_;
};

}  // namespace mltap::metrics
