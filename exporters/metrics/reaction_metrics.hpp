// Scrape-time metrics of the reactions and the webhook (docs/metrics.md, "Alerts and
// reactions"): mltap_reactions_total{reaction,result} and mltap_webhook_requests_total{code}.
// Reads atomic counters only: a scrape never waits for a reaction.
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "core/reaction_counters.hpp"

namespace mltap::metrics {

class ReactionCollector : public prometheus::Collectable {
 public:
  // The reaction engine's counters (must outlive the collector's registration).
  using CountersSource = std::function<const core::ReactionCounters&()>;
  // Webhook requests answered, by HTTP status code; null when the webhook is disabled.
  using RequestsSource = std::function<std::vector<std::pair<int, std::uint64_t>>()>;
  ReactionCollector(CountersSource counters, RequestsSource requests)
      : counters_(std::move(counters)), requests_(std::move(requests)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  CountersSource counters_;
  RequestsSource requests_;
};

}  // namespace mltap::metrics
