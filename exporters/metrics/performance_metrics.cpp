#include "exporters/metrics/performance_metrics.hpp"

#include <cmath>
#include <limits>

#include "exporters/metrics/family.hpp"
#include "exporters/metrics/performance_slice_metrics.hpp"

namespace mltap::metrics {

using prometheus::MetricType;

std::vector<prometheus::MetricFamily> PerformanceCollector::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  const auto snap = source_ ? source_() : nullptr;
  if (!snap) return out;
  FamilyBuilder predictions("mltap_performance_predictions_total",
                            "Predictions with a trace id entered into the label join (first arrival of each id)",
                            MetricType::Counter);
  FamilyBuilder ignored("mltap_performance_predictions_ignored_total",
                        "Prediction rows not joined, by reason (duplicate, no_trace_id, bad)", MetricType::Counter);
  FamilyBuilder labels("mltap_performance_labels_total",
                       "Label rows by outcome (joined, unmatched, duplicate, late, bad, no_trace_id)", MetricType::Counter);
  FamilyBuilder expired("mltap_performance_expired_unlabelled_total",
                        "Predictions whose label TTL (and grace) ended without a label", MetricType::Counter);
  FamilyBuilder evicted("mltap_performance_evicted_total",
                        "Entries evicted from a full pending table, by cause", MetricType::Counter);
  FamilyBuilder pending("mltap_performance_pending_entries",
                        "Entries in the pending table, by state (prediction, waiting_label, joined_marker)", MetricType::Gauge);
  FamilyBuilder capacity("mltap_performance_pending_capacity_entries", "Entries the pending table holds at most",
                         MetricType::Gauge);
  FamilyBuilder bytes("mltap_performance_pending_table_bytes", "Size of the pending table (file or memory)",
                      MetricType::Gauge);
  FamilyBuilder lag("mltap_performance_label_lag_seconds",
                    "Label time minus prediction time of joined labels", MetricType::Histogram);
  FamilyBuilder start("mltap_performance_window_start_seconds",
                      "Start of the latest prediction-time window with labels (the one the gauges below describe)",
                      MetricType::Gauge);
  FamilyBuilder win_predictions("mltap_performance_window_predictions",
                                "Predictions in the latest window with labels", MetricType::Gauge);
  FamilyBuilder win_labelled("mltap_performance_window_labelled",
                             "Predictions of that window joined to a label", MetricType::Gauge);
  FamilyBuilder coverage("mltap_performance_label_coverage_ratio",
                         "Labelled share of that window's predictions", MetricType::Gauge);
  FamilyBuilder realized("mltap_performance_realized",
                         "Realized metric of that window (accuracy, precision, recall, f1, roc_auc, log_loss, "
                         "calibration_error, mae, rmse); absent when undefined",
                         MetricType::Gauge);
  // Label-free estimates (docs/performance.md, "Estimates") of each stream's latest window with
  // predictions, which is usually one whose labels have not arrived yet.
  FamilyBuilder est_start("mltap_performance_estimate_window_start_seconds",
                          "Start of the latest prediction-time window with predictions (the one the estimate "
                          "gauges describe)",
                          MetricType::Gauge);
  FamilyBuilder estimated("mltap_performance_estimated",
                          "Label-free (CBPE) estimate of a metric of that window (accuracy, precision, recall, "
                          "f1) and its sampling-error band (bound: value, lower, upper); absent when withheld "
                          "or undefined",
                          MetricType::Gauge);
  FamilyBuilder withheld("mltap_performance_estimate_withheld",
                         "1 when that window's estimate is withheld, by reason (no_reference, outside_support)",
                         MetricType::Gauge);
  FamilyBuilder ref_pairs("mltap_performance_estimate_reference_pairs",
                          "Joined pairs in the estimates' reference (it is fitted at performance.reference_pairs)",
                          MetricType::Gauge);
  FamilyBuilder ref_ece("mltap_performance_estimate_reference_calibration_error",
                        "Expected calibration error on the reference of the raw scores and of the isotonic map "
                        "(held-out folds); the smaller one is used",
                        MetricType::Gauge);
  FamilyBuilder orphan("mltap_performance_labels_without_predictions_stream_total",
                       "Label rows of label streams no predictions stream names", MetricType::Counter);

  std::vector<double> bounds(core::kLabelLagBucketsSeconds.begin(), core::kLabelLagBucketsSeconds.end());
  bounds.push_back(std::numeric_limits<double>::infinity());
  for (const auto& s : snap->streams) {
    const Labels l{{"stream", s.stream}};
    auto with = [&](const char* k, const std::string& v) {
      Labels x = l;
      x.emplace_back(k, v);
      return x;
    };
    const auto& c = s.counters;
    predictions.add(l, static_cast<double>(c.predictions));
    ignored.add(with("reason", "duplicate"), static_cast<double>(c.predictions_duplicate));
    ignored.add(with("reason", "no_trace_id"), static_cast<double>(c.predictions_no_trace_id));
    ignored.add(with("reason", "bad"), static_cast<double>(c.predictions_bad));
    labels.add(with("outcome", "joined"), static_cast<double>(c.joined));
    labels.add(with("outcome", "unmatched"), static_cast<double>(c.unmatched));
    labels.add(with("outcome", "duplicate"), static_cast<double>(c.duplicate));
    labels.add(with("outcome", "late"), static_cast<double>(c.late));
    labels.add(with("outcome", "bad"), static_cast<double>(c.labels_bad));
    labels.add(with("outcome", "no_trace_id"), static_cast<double>(c.labels_no_trace_id));
    expired.add(l, static_cast<double>(c.expired_unlabelled));
    for (std::size_t i = 0; i < core::kEvictionCauses; ++i) {
      evicted.add(with("cause", std::string(core::eviction_cause_name(static_cast<core::EvictionCause>(i)))),
                  static_cast<double>(c.evicted[i]));
    }
    pending.add(with("state", "prediction"), static_cast<double>(s.pending));
    pending.add(with("state", "waiting_label"), static_cast<double>(s.waiting_labels));
    pending.add(with("state", "joined_marker"), static_cast<double>(s.joined_markers));
    capacity.add(l, static_cast<double>(s.capacity));
    bytes.add(l, static_cast<double>(s.table_bytes));
    lag.add_histogram(l, bounds, std::vector<std::uint64_t>(s.lag_buckets.begin(), s.lag_buckets.end()),
                      s.lag_seconds_sum);
    if (s.reference) {
      ref_pairs.add(l, static_cast<double>(s.reference->pairs));
      if (s.reference->fitted) {
        ref_ece.add(with("scores", "raw"), s.reference->ece_raw);
        ref_ece.add(with("scores", "isotonic"), s.reference->ece_calibrated);
      }
      const core::PerformanceWindow* newest = nullptr;
      for (const auto& w : s.windows) {
        if (w.predictions > 0 && w.estimate) newest = &w;
      }
      if (newest) {
        const auto& e = *newest->estimate;
        est_start.add(l, static_cast<double>(newest->start_unix_ns) / 1e9);
        for (std::size_t i = 1; i < core::kEstimateWithheldReasons; ++i) {
          const auto r = static_cast<core::EstimateWithheld>(i);
          withheld.add(with("reason", std::string(core::estimate_withheld_name(r))), e.withheld == r ? 1 : 0);
        }
        const std::pair<const char*, const std::optional<core::EstimatedValue>*> est[] = {
            {"accuracy", &e.accuracy}, {"precision", &e.precision}, {"recall", &e.recall}, {"f1", &e.f1}};
        for (const auto& [name, v] : est) {
          if (!v->has_value()) continue;
          Labels x = with("metric", name);
          for (const auto& [bound, value] : {std::pair{"value", (*v)->value}, std::pair{"lower", (*v)->lower},
                                             std::pair{"upper", (*v)->upper}}) {
            Labels y = x;
            y.emplace_back("bound", bound);
            estimated.add(y, value);
          }
        }
      }
    }
    const core::PerformanceWindow* latest = nullptr;
    for (const auto& w : s.windows) {
      if (w.labelled > 0) latest = &w;
    }
    if (!latest) continue;
    start.add(l, static_cast<double>(latest->start_unix_ns) / 1e9);
    win_predictions.add(l, static_cast<double>(latest->predictions));
    win_labelled.add(l, static_cast<double>(latest->labelled));
    coverage.add(l, latest->coverage());
    for (const auto& [name, v] : core::named_metrics(latest->metrics)) {
      if (v) realized.add(with("metric", std::string(name)), *v);
    }
  }
  orphan.add({}, static_cast<double>(snap->labels_without_predictions_stream));
  for (auto* f : {&predictions, &ignored, &labels, &expired, &evicted, &pending, &capacity, &bytes, &lag,
                  &start, &win_predictions, &win_labelled, &coverage, &realized, &orphan, &est_start,
                  &estimated, &withheld, &ref_pairs, &ref_ece}) {
    f->move_into(out);
  }
  collect_performance_slices(*snap, out);
  return out;
}

}  // namespace mltap::metrics
