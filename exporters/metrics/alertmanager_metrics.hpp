// mltap_alertmanager_pushes_total{result}: mltapd's direct pushes of findings to Alertmanager,
// read at scrape time from the counts a provider returns (the pusher's, or a test's fixture).
#pragma once

#include <functional>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "core/alert.hpp"

namespace mltap::metrics {

class AlertmanagerPushCollector : public prometheus::Collectable {
 public:
  using Source = std::function<core::AlertPushCounts()>;
  explicit AlertmanagerPushCollector(Source source) : source_(std::move(source)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  Source source_;
};

}  // namespace mltap::metrics
