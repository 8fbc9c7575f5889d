#include "exporters/metrics/reaction_metrics.hpp"

#include <string>

#include "exporters/metrics/family.hpp"

namespace mltap::metrics {

std::vector<prometheus::MetricFamily> ReactionCollector::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  FamilyBuilder reactions("mltap_reactions_total",
                          "Reaction decisions by configured reaction and result.",
                          prometheus::MetricType::Counter);
  const auto& counters = counters_();
  for (std::size_t i = 0; i < counters.reactions().size(); ++i) {
    for (std::size_t r = 0; r < core::kReactionResultCount; ++r) {
      const auto result = static_cast<core::ReactionResult>(r);
      reactions.add({{"reaction", counters.reactions()[i]},
                     {"result", std::string(core::reaction_result_name(result))}},
                    static_cast<double>(counters.get(i, result)));
    }
  }
  reactions.move_into(out);

  if (requests_) {
    FamilyBuilder requests("mltap_webhook_requests_total",
                           "Alertmanager webhook requests by HTTP status code.",
                           prometheus::MetricType::Counter);
    for (const auto& [code, n] : requests_()) {
      if (n == 0 && code != 200) continue;  // codes appear once they happen
      requests.add({{"code", std::to_string(code)}}, static_cast<double>(n));
    }
    out.push_back(requests.take());  // present even before the first request
  }
  return out;
}

}  // namespace mltap::metrics
