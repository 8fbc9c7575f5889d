#include "exporters/metrics/performance_slice_metrics.hpp"

#include <string>
#include <utility>

#include "exporters/metrics/family.hpp"

namespace mltap::metrics {

using prometheus::MetricType;

void collect_performance_slices(const core::PerformanceSnapshot& snap, std::vector<prometheus::MetricFamily>& out) {
  FamilyBuilder predictions("mltap_performance_slice_window_predictions",
                            "Predictions of a slice in the stream's latest window with labels", MetricType::Gauge);
  FamilyBuilder labelled("mltap_performance_slice_window_labelled",
                         "Predictions of a slice in that window joined to a label", MetricType::Gauge);
  FamilyBuilder coverage("mltap_performance_slice_label_coverage_ratio",
                         "Labelled share of a slice's predictions in that window", MetricType::Gauge);
  FamilyBuilder realized("mltap_performance_slice_realized",
                         "Realized metric of a slice in that window (as mltap_performance_realized); absent when undefined",
                         MetricType::Gauge);
  FamilyBuilder slice_rows("mltap_performance_slice_rows_total",
                           "Prediction rows of sliced streams not given a slice of their own, by reason "
                           "(over_cap and invalid go to slice=\"other\"; missing_column rows are not sliced)",
                           MetricType::Counter);
  FamilyBuilder prejoined("mltap_performance_prejoined_rows_total",
                          "Rows of pre-joined streams by outcome (accepted, bad_shape, bad_prediction, bad_label, "
                          "bad_time, future, too_old)",
                          MetricType::Counter);
  for (const auto& s : snap.streams) {
    if (s.prejoined) {
      const auto& p = s.prejoined_counters;
      const std::pair<const char*, std::uint64_t> outcomes[] = {
          {"accepted", p.accepted},   {"bad_shape", p.bad_shape}, {"bad_prediction", p.bad_prediction},
          {"bad_label", p.bad_label}, {"bad_time", p.bad_time},   {"future", p.future},
          {"too_old", p.too_old}};
      for (const auto& [name, v] : outcomes) {
        prejoined.add({{"stream", s.stream}, {"outcome", name}}, static_cast<double>(v));
      }
    }
    if (s.slice_column.empty()) continue;
    slice_rows.add({{"stream", s.stream}, {"reason", "over_cap"}}, static_cast<double>(s.slice_other_rows));
    slice_rows.add({{"stream", s.stream}, {"reason", "invalid"}}, static_cast<double>(s.slice_invalid_rows));
    slice_rows.add({{"stream", s.stream}, {"reason", "missing_column"}}, static_cast<double>(s.slice_missing_rows));
    const core::PerformanceWindow* latest = nullptr;
    for (const auto& w : s.windows) {
      if (w.labelled > 0) latest = &w;
    }
    if (!latest) continue;
    for (const auto& sl : latest->slices) {
      const Labels l{{"stream", s.stream}, {"slice", sl.value}};
      predictions.add(l, static_cast<double>(sl.predictions));
      labelled.add(l, static_cast<double>(sl.labelled));
      coverage.add(l, sl.coverage());
      for (const auto& [name, v] : core::named_metrics(sl.metrics)) {
        if (!v) continue;
        Labels x = l;
        x.emplace_back("metric", std::string(name));
        realized.add(x, *v);
      }
    }
  }
  for (auto* f : {&predictions, &labelled, &coverage, &realized, &slice_rows, &prejoined}) f->move_into(out);
}

}  // namespace mltap::metrics
