#include "exporters/metrics/detector_metrics.hpp"

#include <algorithm>
#include <cmath>
#include <map>

#include "exporters/metrics/family.hpp"

namespace mltap::metrics {

using core::FindingKind;

using prometheus::MetricType;

namespace {

constexpr FindingKind kKinds[] = {FindingKind::drift,      FindingKind::data_quality,     FindingKind::schema_change,
                                  FindingKind::staleness,  FindingKind::throughput,       FindingKind::sequential_change,
                                  FindingKind::prediction_drift, FindingKind::embedding_drift,
                                  FindingKind::performance};
constexpr const char* kOther = "_other";

double quality_badness(const core::FeatureResult& r) {
  return std::max({r.nan_ratio, r.inf_ratio, r.out_of_range_ratio});
}

}  // namespace

std::vector<prometheus::MetricFamily> DetectorCollector::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  const auto snap = source_ ? source_() : nullptr;
  if (!snap) return out;
  FamilyBuilder active("mltap_stream_finding_active", "A finding of this kind is open (1, with its severity and finding_id) or not (0, severity=\"none\")", MetricType::Gauge);
  FamilyBuilder info("mltap_stream_finding_info", "Open finding and its top features (comma separated)", MetricType::Gauge);
  FamilyBuilder stream_drift("mltap_stream_drift_detected", "Stream-level drift decision of the last window", MetricType::Gauge);
  FamilyBuilder score("mltap_feature_drift_score", "Effect size per feature and method, last window vs reference", MetricType::Gauge);
  FamilyBuilder detected("mltap_feature_drift_detected", "Per-feature drift decision of the last window", MetricType::Gauge);
  FamilyBuilder quality("mltap_feature_quality_ratio", "Share of the last window's values failing the check", MetricType::Gauge);
  FamilyBuilder reference("mltap_stream_reference_info", "Where the stream's reference came from", MetricType::Gauge);
  FamilyBuilder aggregated("mltap_detector_features_aggregated", "Features folded into feature=\"_other\" series", MetricType::Gauge);
  FamilyBuilder windows("mltap_detector_windows_total", "Detector windows closed", MetricType::Counter);
  FamilyBuilder cut("mltap_detector_cut_total", "Not analyzed because a cap was reached", MetricType::Counter);
  FamilyBuilder fleet_values("mltap_fleet_bin_values_total",
                             "Values counted per fleet bin of the reference profile file (sum across hosts)", MetricType::Counter);
  FamilyBuilder fleet_share("mltap_fleet_reference_share",
                            "Reference share per fleet bin, smoothed (count+0.5)/(n+0.5*bins)", MetricType::Gauge);

  std::map<std::pair<std::string, FindingKind>, const core::Finding*> open;
  for (const auto& f : snap->open_findings) open[{f.stream, f.kind}] = &f;

  for (const auto& sp : snap->streams) {
    const auto& s = *sp;
    for (auto kind : kKinds) {
      auto it = open.find({s.name, kind});
      const std::string k(core::finding_kind_name(kind));
      if (it == open.end()) {
        active.add({{"stream", s.name}, {"component", s.component}, {"kind", k}, {"severity", "none"}}, 0);
        continue;
      }
      const auto& f = *it->second;
      // finding_id: a finding superseded by a material change is a new series, hence a new alert.
      active.add({{"stream", s.name}, {"component", s.component}, {"kind", k},
                  {"severity", std::string(core::severity_name(f.severity))}, {"finding_id", std::to_string(f.id)}},
                 1);
      std::string top;
      std::size_t n = 0;
      for (const auto& e : f.top) {
        if (n == 5) break;
        if (("," + top + ",").find("," + e.feature + ",") != std::string::npos) continue;
        top += (top.empty() ? "" : ",") + e.feature;
        ++n;
      }
      info.add({{"stream", s.name}, {"component", s.component}, {"kind", k}, {"top_features", top}}, 1);
    }
    stream_drift.add({{"stream", s.name}, {"component", s.component}}, s.drift_detected ? 1 : 0);
    reference.add({{"stream", s.name}, {"source", std::string(core::reference_source_name(s.reference))}}, 1);
    windows.add({{"stream", s.name}}, static_cast<double>(s.windows_closed));

    const auto& feats = *s.features;
    std::vector<std::size_t> order;
    for (std::size_t i = 0; i < feats.size(); ++i) {
      if (feats[i].enabled) order.push_back(i);
    }
    const std::size_t k = std::min(options_.top_features, order.size());
    // Drift: drifted first, then by score/threshold.
    auto by_drift = order;
    std::stable_sort(by_drift.begin(), by_drift.end(), [&](std::size_t a, std::size_t b) {
      if (feats[a].drifted != feats[b].drifted) return feats[a].drifted;
      return feats[a].max_ratio > feats[b].max_ratio;
    });
    std::map<std::string_view, double> other_score;
    double other_detected = 0;
    for (std::size_t j = 0; j < by_drift.size(); ++j) {
      const auto& r = feats[by_drift[j]];
      if (j < k) {
        for (const auto& m : r.scores) {
          if (std::isfinite(m.score)) score.add({{"stream", s.name}, {"feature", r.name}, {"method", std::string(m.method)}}, m.score);
        }
        detected.add({{"stream", s.name}, {"feature", r.name}}, r.drifted ? 1 : 0);
      } else {
        for (const auto& m : r.scores) {
          if (std::isfinite(m.score)) other_score[m.method] = std::max(other_score[m.method], m.score);
        }
        other_detected = std::max(other_detected, r.drifted ? 1.0 : 0.0);
      }
    }
    const std::size_t rest = by_drift.size() - k;
    if (rest > 0) {
      for (const auto& [m, v] : other_score) score.add({{"stream", s.name}, {"feature", kOther}, {"method", std::string(m)}}, v);
      detected.add({{"stream", s.name}, {"feature", kOther}}, other_detected);
    }
    // Quality: worst first.
    auto by_quality = order;
    std::stable_sort(by_quality.begin(), by_quality.end(),
                     [&](std::size_t a, std::size_t b) { return quality_badness(feats[a]) > quality_badness(feats[b]); });
    double on = 0, oi = 0, oo = 0;
    for (std::size_t j = 0; j < by_quality.size(); ++j) {
      const auto& r = feats[by_quality[j]];
      if (j < k) {
        quality.add({{"stream", s.name}, {"feature", r.name}, {"check", "nan"}}, r.nan_ratio);
        quality.add({{"stream", s.name}, {"feature", r.name}, {"check", "inf"}}, r.inf_ratio);
        quality.add({{"stream", s.name}, {"feature", r.name}, {"check", "out_of_range"}}, r.out_of_range_ratio);
      } else {
        on = std::max(on, r.nan_ratio);
        oi = std::max(oi, r.inf_ratio);
        oo = std::max(oo, r.out_of_range_ratio);
      }
    }
    if (rest > 0) {
      quality.add({{"stream", s.name}, {"feature", kOther}, {"check", "nan"}}, on);
      quality.add({{"stream", s.name}, {"feature", kOther}, {"check", "inf"}}, oi);
      quality.add({{"stream", s.name}, {"feature", kOther}, {"check", "out_of_range"}}, oo);
    }
    aggregated.add({{"stream", s.name}}, static_cast<double>(rest));
    // Fleet bins: every analyzed feature (the engine's per-stream feature cap bounds them), never
    // folded into _other (bins of different features cannot be summed).
    if (s.fleet) {
      for (const auto& fb : *s.fleet) {
        for (std::size_t b = 0; b < fb.counts.size() && b < fb.reference_share.size(); ++b) {
          const Labels l{{"stream", s.name}, {"feature", fb.feature}, {"edges_id", fb.edges_id}, {"bin", std::to_string(b)}};
          fleet_values.add(l, static_cast<double>(fb.counts[b]));
          fleet_share.add(l, fb.reference_share[b]);
        }
      }
    }
  }
  const auto& c = snap->counters;
  cut.add({{"what", "streams"}}, static_cast<double>(c.streams_cut));
  cut.add({{"what", "features"}}, static_cast<double>(c.features_cut));
  cut.add({{"what", "records"}}, static_cast<double>(c.records_cut));
  for (auto* f : {&active, &info, &stream_drift, &score, &detected, &quality, &reference, &aggregated, &windows, &cut,
                 &fleet_values, &fleet_share}) {
    f->move_into(out);
  }
  return out;
}

}  // namespace mltap::metrics
