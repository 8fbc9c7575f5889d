#include "exporters/metrics/ingest_metrics.hpp"

#include <cmath>

#include "exporters/metrics/family.hpp"
#include "mltap/format.hpp"

namespace mltap::metrics {

using prometheus::MetricType;

std::vector<prometheus::MetricFamily> IngestCollector::Collect() const {
  const auto snap = source_();
  std::vector<prometheus::MetricFamily> out;

  FamilyBuilder build("mltap_build_info", "mltapd build metadata", MetricType::Gauge);
  build.add({{"version", version_},
             {"abi", std::to_string(format::kAbiMajor) + "." + std::to_string(format::kAbiMinor)}},
            1);
  build.move_into(out);

  FamilyBuilder cut("mltap_label_values_cut_total",
                    "Series not exported because a label cardinality cap was reached",
                    MetricType::Counter);
  cut.add({{"label", "stream"}}, static_cast<double>(snap->streams_cut));
  cut.add({{"label", "feature"}}, static_cast<double>(snap->features_cut));
  cut.move_into(out);

  FamilyBuilder segs("mltap_segments", "Ring segments the agent sees, by state", MetricType::Gauge);
  segs.add({{"state", "active"}}, static_cast<double>(snap->segments_active));
  segs.add({{"state", "draining"}}, static_cast<double>(snap->segments_draining));
  segs.add({{"state", "pending"}}, static_cast<double>(snap->segments_pending));
  segs.add({{"state", "rejected"}}, static_cast<double>(snap->segments_rejected));
  segs.add({{"state", "ignored"}}, static_cast<double>(snap->segments_ignored));
  segs.move_into(out);

  FamilyBuilder rejected("mltap_segments_rejected_total", "Segments refused, by reason",
                         MetricType::Counter);
  for (const auto& [reason, n] : snap->rejected_total) rejected.add({{"reason", reason}}, static_cast<double>(n));
  rejected.move_into(out);
  // The producer trust check (docs/security.md): label sets bounded by the ingest layer (a fixed
  // list of causes; at most core::kMaxUidLabels uids plus "other").
  FamilyBuilder unverified("mltap_segments_unverified_total",
                           "Segments refused because the kernel did not vouch for the producer "
                           "their header names, by cause",
                           MetricType::Counter);
  for (const auto& [cause, n] : snap->unverified_total) unverified.add({{"cause", cause}}, static_cast<double>(n));
  unverified.move_into(out);
  FamilyBuilder owner("mltap_segments_stream_owner_refused_total",
                      "Verified segments refused because their stream belongs to another uid, by "
                      "the segment's uid",
                      MetricType::Counter);
  for (const auto& [uid, n] : snap->stream_owner_refused) owner.add({{"uid", uid}}, static_cast<double>(n));
  owner.move_into(out);
  FamilyBuilder squatted("mltap_presence_file_squatted",
                         "1 while the namespace's presence file name is held by another uid (or "
                         "is not a file) and mltapd cannot replace it",
                         MetricType::Gauge);
  squatted.add({}, snap->presence_squatted ? 1.0 : 0.0);
  squatted.move_into(out);
  FamilyBuilder quota("mltap_segments_quota_refused_total",
                      "Verified segments refused because their uid had reached "
                      "ingest.max_segments_per_uid or max_streams_per_uid, by the file owner's uid",
                      MetricType::Counter);
  for (const auto& [uid, n] : snap->quota_refused) quota.add({{"uid", uid}}, static_cast<double>(n));
  quota.move_into(out);
  FamilyBuilder artifacts("mltap_artifacts_refused_total",
                          "Declared artifact paths not watched: outside ingest.artifact_dirs or "
                          "not readable by the producer's uid",
                          MetricType::Counter);
  artifacts.add({}, static_cast<double>(snap->artifacts_refused));
  artifacts.move_into(out);
  FamilyBuilder removed("mltap_segments_removed_total",
                        "Segments unlinked after their producer ended", MetricType::Counter);
  for (const auto& [reason, n] : snap->removed_total) removed.add({{"reason", reason}}, static_cast<double>(n));
  removed.move_into(out);

  FamilyBuilder records("mltap_stream_records_total", "Records (rows) the agent read and accepted", MetricType::Counter);
  FamilyBuilder writes("mltap_stream_writes_total", "Rows producers were asked to write, counted exactly by the producers", MetricType::Counter);
  FamilyBuilder sampled("mltap_stream_sampled_out_records_total", "Rows skipped by producer-side sampling", MetricType::Counter);
  FamilyBuilder dropped("mltap_stream_dropped_records_total", "Rows lost, by cause", MetricType::Counter);
  FamilyBuilder invalid("mltap_stream_invalid_records_total", "Records refused on validation, by reason", MetricType::Counter);
  FamilyBuilder mismatch("mltap_stream_schema_mismatch_records_total", "Records whose row shape differs from the stream's first records", MetricType::Counter);
  FamilyBuilder backlog("mltap_stream_backlog_records_total", "Rows left in the rings by producers that ended before the agent started: counted, not analyzed", MetricType::Counter);
  FamilyBuilder producers("mltap_stream_producers", "Live producer processes", MetricType::Gauge);
  FamilyBuilder last("mltap_stream_last_record_timestamp_seconds", "Producer timestamp of the newest record", MetricType::Gauge);
  FamilyBuilder restarts("mltap_stream_producer_restarts_total", "A producer went away and another appeared", MetricType::Counter);
  FamilyBuilder values("mltap_feature_values_total", "Values seen per feature", MetricType::Counter);
  FamilyBuilder nonfinite("mltap_feature_nonfinite_total", "Non-finite values per feature", MetricType::Counter);
  FamilyBuilder mean("mltap_feature_mean", "Mean of finite values in the last statistics window", MetricType::Gauge);
  FamilyBuilder var("mltap_feature_variance", "Variance of finite values in the last statistics window", MetricType::Gauge);
  FamilyBuilder mn("mltap_feature_min", "Minimum finite value in the last statistics window", MetricType::Gauge);
  FamilyBuilder mx("mltap_feature_max", "Maximum finite value in the last statistics window", MetricType::Gauge);

  for (const auto& s : snap->streams) {
    const Labels sc{{"stream", s.info.name}, {"component", s.info.component}};
    records.add(sc, static_cast<double>(s.records_total));
    writes.add(sc, static_cast<double>(s.writes_total));
    sampled.add(sc, static_cast<double>(s.sampled_out_total));
    for (std::size_t r = 0; r < s.dropped.size(); ++r) {
      dropped.add({{"stream", s.info.name},
                   {"reason", std::string(core::drop_reason_name(static_cast<core::DropReason>(r)))}},
                  static_cast<double>(s.dropped[r]));
    }
    for (std::size_t r = 0; r < s.invalid.size(); ++r) {
      if (s.invalid[r] == 0) continue;
      invalid.add({{"stream", s.info.name},
                   {"reason", std::string(core::invalid_reason_name(static_cast<core::InvalidReason>(r)))}},
                  static_cast<double>(s.invalid[r]));
    }
    mismatch.add({{"stream", s.info.name}}, static_cast<double>(s.schema_mismatch_total));
    backlog.add({{"stream", s.info.name}}, static_cast<double>(s.backlog_total));
    producers.add(sc, s.live_producers);
    if (s.last_record_unix_ns) last.add(sc, static_cast<double>(s.last_record_unix_ns) / 1e9);
    restarts.add(sc, static_cast<double>(s.restarts_total));
    for (const auto& f : s.features) {
      const Labels sf{{"stream", s.info.name}, {"feature", f.name}};
      values.add(sf, static_cast<double>(f.values_total));
      nonfinite.add({{"stream", s.info.name}, {"feature", f.name}, {"kind", "nan"}}, static_cast<double>(f.nan_total));
      nonfinite.add({{"stream", s.info.name}, {"feature", f.name}, {"kind", "inf"}}, static_cast<double>(f.inf_total));
      if (f.window_count > 0) {
        mean.add(sf, f.mean);
        var.add(sf, f.variance);
        mn.add(sf, f.min);
        mx.add(sf, f.max);
      }
    }
  }
  for (auto* b : {&records, &writes, &sampled, &dropped, &invalid, &mismatch, &backlog, &producers, &last,
                  &restarts, &values, &nonfinite, &mean, &var, &mn, &mx}) {
    b->move_into(out);
  }
  return out;
}

}  // namespace mltap::metrics
