// Metrics of the ingest layer (docs/metrics.md, "Agent" and "Streams"), built at scrape time from
// the latest ingest snapshot.
#pragma once

#include <prometheus/collectable.h>

#include "ingest/ingest.hpp"

namespace mltap::prom {

class IngestCollector : public prometheus::Collectable {
 public:
  explicit IngestCollector(const ingest::Ingest& ingest, std::string version)
      : ingest_(ingest), version_(std::move(version)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const ingest::Ingest& ingest_;
  std::string version_;
};

}  // namespace mltap::prom
