// Metrics of the ingest layer (docs/metrics.md, "Agent" and "Streams"), built at scrape time from
// the latest ingest snapshot.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/collectable.h>

#include "core/ingest_state.hpp"

namespace mltap::metrics {

class IngestCollector : public prometheus::Collectable {
 public:
  // `source` returns the latest ingest snapshot (never null); `version` is mltapd's.
  using SnapshotSource = std::function<std::shared_ptr<const core::IngestSnapshot>()>;
  IngestCollector(SnapshotSource source, std::string version)
      : source_(std::move(source)), version_(std::move(version)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  SnapshotSource source_;
  std::string version_;
};

}  // namespace mltap::metrics
