// Detector metrics (docs/metrics.md, "Detectors"), built at scrape time from the engine's latest
// snapshot. Per stream, only the top-k features (by drift, and separately by data quality) get
// their own series; the rest are folded into feature="_other" (the largest value among them) and
// counted in mltap_detector_features_aggregated.
#pragma once

#include <functional>
#include <memory>

#include <prometheus/collectable.h>

#include "core/detector_state.hpp"

namespace mltap::metrics {

struct DetectorCollectorOptions {
  std::size_t top_features = 10;  // per stream and family
};

class DetectorCollector : public prometheus::Collectable {
 public:
  using SnapshotSource = std::function<std::shared_ptr<const core::DetectorSnapshot>()>;
  using Options = DetectorCollectorOptions;
  explicit DetectorCollector(SnapshotSource source, Options options = {})
      : source_(std::move(source)), options_(options) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  SnapshotSource source_;
  Options options_;
};

}  // namespace mltap::metrics
