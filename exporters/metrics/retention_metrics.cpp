#include "exporters/metrics/retention_metrics.hpp"

#include <string>

#include "exporters/metrics/family.hpp"

namespace mltap::metrics {

std::vector<prometheus::MetricFamily> RetentionCollector::Collect() const {
  const core::RetentionStats s = source_();
  FamilyBuilder bytes(
      "mltap_retention_bytes",
      "Bytes of retained samples per stream (files in the state directory, or memory).",
      prometheus::MetricType::Gauge);
  FamilyBuilder records("mltap_retention_records", "Rows retained per stream.",
                        prometheus::MetricType::Gauge);
  FamilyBuilder oldest("mltap_retention_oldest_seconds",
                       "Start (unix seconds) of the oldest retained time bucket per stream.",
                       prometheus::MetricType::Gauge);
  for (const auto& st : s.streams) {
    bytes.add({{"stream", st.stream}}, static_cast<double>(st.bytes));
    records.add({{"stream", st.stream}}, static_cast<double>(st.records));
    if (st.oldest_unix_ns)
      oldest.add({{"stream", st.stream}}, static_cast<double>(st.oldest_unix_ns) / 1e9);
  }
  FamilyBuilder dropped(
      "mltap_retention_dropped_total",
      "Rows not retained, or no longer, by cause (caps evict the oldest bucket first).",
      prometheus::MetricType::Counter);
  for (std::size_t i = 0; i < s.dropped.size(); ++i) {
    dropped.add(
        {{"cause", std::string(core::retention_drop_name(static_cast<core::RetentionDrop>(i)))}},
        static_cast<double>(s.dropped[i]));
  }
  FamilyBuilder sampled(
      "mltap_retention_sampled_out_total",
      "Rows with a trace id above retention.keep_share (the producers' sampling hash).",
      prometheus::MetricType::Counter);
  sampled.add({}, static_cast<double>(s.sampled_out));
  FamilyBuilder torn("mltap_retention_torn_bytes_total",
                     "Bytes of torn or corrupt file tails cut when the store was reopened.",
                     prometheus::MetricType::Counter);
  torn.add({}, static_cast<double>(s.torn_bytes));
  FamilyBuilder flagged("mltap_retention_flagged_ids",
                        "Trace ids flagged as wrong predictions (mltap flag).",
                        prometheus::MetricType::Gauge);
  flagged.add({}, static_cast<double>(s.flagged));
  FamilyBuilder failing(
      "mltap_retention_write_failing",
      "1 while the retained samples' files cannot be written (full or read-only state directory).",
      prometheus::MetricType::Gauge);
  failing.add({}, s.write_failing ? 1.0 : 0.0);
  FamilyBuilder unwritten(
      "mltap_retention_unwritten_bytes",
      "Bytes of retained rows held in memory that their files lack yet (written when they can be).",
      prometheus::MetricType::Gauge);
  unwritten.add({}, static_cast<double>(s.unwritten_bytes));
  FamilyBuilder failures("mltap_retention_write_failures_total",
                         "Writes (or opens) of the retained samples' files that failed, by error.",
                         prometheus::MetricType::Counter);
  for (std::size_t i = 0; i < s.write_failures.size(); ++i) {
    failures.add({{"error", std::string(core::retention_write_error_name(
                                static_cast<core::RetentionWriteError>(i)))}},
                 static_cast<double>(s.write_failures[i]));
  }
  FamilyBuilder memory("mltap_retention_memory_bytes",
                       "Bytes of mltapd's heap holding retained rows (bounded by the byte caps).",
                       prometheus::MetricType::Gauge);
  memory.add({}, static_cast<double>(s.memory_bytes));
  return {bytes.take(),   records.take(), oldest.take(),  dropped.take(),   sampled.take(),
          torn.take(),    flagged.take(), failing.take(), unwritten.take(), failures.take(),
          memory.take()};
}

}  // namespace mltap::metrics
