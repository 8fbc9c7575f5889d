// Small helpers to build prometheus-cpp MetricFamily values from snapshots.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <prometheus/metric_family.h>

namespace mltap::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class FamilyBuilder {
 public:
  FamilyBuilder(std::string name, std::string help, prometheus::MetricType type) {
    family_.name = std::move(name);
    family_.help = std::move(help);
    family_.type = type;
  }
  FamilyBuilder& add(const Labels& labels, double value) {
    prometheus::ClientMetric m;
    for (const auto& [k, v] : labels) m.label.push_back({k, v});
    switch (family_.type) {
      case prometheus::MetricType::Counter: m.counter.value = value; break;
      case prometheus::MetricType::Gauge: m.gauge.value = value; break;
      default: m.untyped.value = value; break;
    }
    family_.metric.push_back(std::move(m));
    return *this;
  }
  // Histogram from per-bucket (not cumulative) counts with their upper bounds; the last bound
  // should be +Inf.
  FamilyBuilder& add_histogram(const Labels& labels, const std::vector<double>& upper_bounds,
                               const std::vector<std::uint64_t>& counts, double sum) {
    prometheus::ClientMetric m;
    for (const auto& [k, v] : labels) m.label.push_back({k, v});
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < upper_bounds.size() && i < counts.size(); ++i) {
      cumulative += counts[i];
      m.histogram.bucket.push_back({cumulative, upper_bounds[i]});
    }
    m.histogram.sample_count = cumulative;
    m.histogram.sample_sum = sum;
    family_.metric.push_back(std::move(m));
    return *this;
  }
  bool empty() const { return family_.metric.empty(); }
  prometheus::MetricFamily take() { return std::move(family_); }
  void move_into(std::vector<prometheus::MetricFamily>& out) {
    if (!family_.metric.empty()) out.push_back(std::move(family_));
  }

 private:
  prometheus::MetricFamily family_;
};

}  // namespace mltap::metrics
