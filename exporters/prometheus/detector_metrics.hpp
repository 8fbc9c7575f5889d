// Detector metrics (docs/metrics.md, "Detectors"), built at scrape time from the engine's latest
// snapshot. Per stream, only the top-k features (by drift, and separately by data quality) get
// their own series; the rest are folded into feature="_other" (the largest value among them) and
// counted in mltap_detector_features_aggregated.
#pragma once

#include <functional>
#include <memory>

#include <prometheus/collectable.h>

#include "detectors/engine.hpp"

namespace mltap::prom {

struct DetectorCollectorOptions {
  std::size_t top_features = 10;  // per stream and family
};

class DetectorCollector : public prometheus::Collectable {
 public:
  using SnapshotSource = std::function<std::shared_ptr<const detect::EngineSnapshot>()>;
  using Options = DetectorCollectorOptions;
  DetectorCollector(SnapshotSource source, Options options) : source_(std::move(source)), options_(options) {}
  explicit DetectorCollector(const detect::DetectorEngine& engine, Options options = {})
      : DetectorCollector([&engine] { return engine.snapshot(); }, options) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  SnapshotSource source_;
  Options options_;
};

}  // namespace mltap::prom
