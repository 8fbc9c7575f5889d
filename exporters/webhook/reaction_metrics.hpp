// Scrape-time metrics of the reactions and the webhook (docs/metrics.md, "Alerts and
// reactions"): mltap_reactions_total{reaction,result} and mltap_webhook_requests_total{code}.
// Reads atomic counters only: a scrape never waits for a reaction.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "reactions/reaction_engine.hpp"
#include "webhook/webhook_receiver.hpp"

namespace mltap::webhook {

class ReactionCollector : public prometheus::Collectable {
 public:
  // `receiver` may be null (webhook disabled). Both must outlive the collector's registration.
  ReactionCollector(const react::ReactionEngine& engine, const WebhookReceiver* receiver)
      : engine_(engine), receiver_(receiver) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const react::ReactionEngine& engine_;
  const WebhookReceiver* receiver_;
};

}  // namespace mltap::webhook
