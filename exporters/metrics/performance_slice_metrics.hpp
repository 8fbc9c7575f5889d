// Per-slice performance metrics and pre-joined stream counters (docs/metrics.md, "Performance"):
// families of the PerformanceCollector kept apart from the per-stream ones. `slice` is bounded by
// performance.streams.<name>.slice.max_values (+ "other").
#pragma once

#include <vector>

#include <prometheus/metric_family.h>

#include "core/performance_state.hpp"

namespace mltap::metrics {

void collect_performance_slices(const core::PerformanceSnapshot& snap, std::vector<prometheus::MetricFamily>& out);

}  // namespace mltap::metrics
