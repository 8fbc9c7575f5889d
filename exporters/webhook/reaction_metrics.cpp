#include "webhook/reaction_metrics.hpp"

namespace mltap::webhook {
namespace {

prometheus::ClientMetric counter(std::vector<prometheus::ClientMetric::Label> labels, double value) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = value;
  return m;
}

}  // namespace

std::vector<prometheus::MetricFamily> ReactionCollector::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  prometheus::MetricFamily reactions;
  reactions.name = "mltap_reactions_total";
  reactions.help = "Reaction decisions by configured reaction and result.";
  reactions.type = prometheus::MetricType::Counter;
  const auto& counters = engine_.counters();
  for (std::size_t i = 0; i < counters.reactions().size(); ++i) {
    for (std::size_t r = 0; r < react::kReactionResultCount; ++r) {
      const auto result = static_cast<react::ReactionResult>(r);
      reactions.metric.push_back(counter({{"reaction", counters.reactions()[i]},
                                          {"result", std::string(react::reaction_result_name(result))}},
                                         static_cast<double>(counters.get(i, result))));
    }
  }
  if (!reactions.metric.empty()) out.push_back(std::move(reactions));

  if (receiver_) {
    prometheus::MetricFamily requests;
    requests.name = "mltap_webhook_requests_total";
    requests.help = "Alertmanager webhook requests by HTTP status code.";
    requests.type = prometheus::MetricType::Counter;
    for (const auto& [code, n] : receiver_->requests_by_code()) {
      if (n == 0 && code != 200) continue;  // codes appear once they happen
      requests.metric.push_back(counter({{"code", std::to_string(code)}}, static_cast<double>(n)));
    }
    out.push_back(std::move(requests));
  }
  return out;
}

}  // namespace mltap::webhook
