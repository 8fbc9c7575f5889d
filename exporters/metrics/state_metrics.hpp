// mltap_state_*: the state directory's writer (mltapd's StateKeeper), read at scrape time from the
// counts a provider returns: documents written and failed, documents held in memory, failing now.
#pragma once

#include <functional>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "core/state_store.hpp"

namespace mltap::metrics {

class StateCollector : public prometheus::Collectable {
 public:
  using Source = std::function<core::StateWriteCounts()>;
  explicit StateCollector(Source source) : source_(std::move(source)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  Source source_;
};

}  // namespace mltap::metrics
