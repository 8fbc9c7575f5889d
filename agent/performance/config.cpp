#include "agent/performance/config.hpp"

#include "mltap/naming.hpp"

namespace mltap::performance {

std::optional<format::Task> parse_task(std::string_view t) noexcept {
  if (t == "binary") return format::Task::binary;
  if (t == "multiclass") return format::Task::multiclass;
  if (t == "regression") return format::Task::regression;
  return std::nullopt;
}

PerformanceConfig parse_performance_config(core::ConfigSection s) {
  PerformanceConfig c;
  if (s.is_null()) return c;
  using namespace std::chrono;
  if (auto v = s.get_bool("enabled")) c.enabled = *v;
  if (auto v = s.get_duration("label_ttl", seconds(1), hours(24 * 366))) c.label_ttl = *v;
  if (auto v = s.get_duration("grace", milliseconds(0), hours(24 * 7))) c.grace = *v;
  if (auto v = s.get_duration("window", seconds(1), hours(24 * 31))) c.window = *v;
  if (auto v = s.get_duration("retention", seconds(0), hours(24 * 366))) c.retention = *v;
  if (auto v = s.get_int("max_pending", 1024, 1'000'000'000)) c.max_pending = static_cast<std::uint64_t>(*v);
  if (auto v = s.get_bytes("max_pending_bytes", 64ull << 10, 1ull << 40)) c.max_pending_bytes = *v;
  if (auto v = s.get_double("threshold", 0.0, 1.0)) c.threshold = *v;
  if (auto v = s.get_int("calibration_bins", 2, 1000)) c.calibration_bins = static_cast<std::uint32_t>(*v);
  if (auto v = s.get_int("reference_pairs", 0, 100'000)) {
    if (*v > 0 && *v < 20) s.fail("reference_pairs", "must be 0 (no estimates) or at least 20 (5 folds)");
    c.reference_pairs = static_cast<std::uint64_t>(*v);
  }
  if (auto v = s.get_int("estimate_min_bin_pairs", 1, 1'000'000)) c.estimate_min_bin_pairs = static_cast<std::uint32_t>(*v);
  if (auto v = s.get_double("estimate_max_unsupported", 0.0, 1.0)) c.estimate_max_unsupported = *v;
  if (auto v = s.get_int("max_streams", 1, 4096)) c.max_streams = static_cast<std::uint32_t>(*v);
  auto f = s.child("findings");
  if (!f.is_null()) {
    if (auto v = f.get_bool("enabled")) c.findings.enabled = *v;
    if (auto v = f.get_int("min_labels", 10, 1'000'000'000)) c.findings.min_labels = static_cast<std::uint64_t>(*v);
    if (auto v = f.get_double("confidence", 0.5, 0.9999)) c.findings.confidence = *v;
    if (auto v = f.get_double("tolerance", 0.0, 1.0)) c.findings.tolerance = *v;
    if (auto v = f.get_int("reference_windows", 1, 1000)) c.findings.reference_windows = static_cast<std::uint32_t>(*v);
    if (auto v = f.get_double("floor", 0.0, 1.0)) c.findings.floor = *v;
    if (auto v = f.get_int("many_features", 2, 100000)) c.findings.many_features = static_cast<std::uint32_t>(*v);
    f.finish();
  }
  for (auto& [name, sub] : s.child_map("streams")) {
    if (!naming::valid_stream_name(name)) s.fail("streams", "'" + name + "' is not a valid stream name");
    StreamSettings st;
    if (auto v = sub.get_string("labels_stream")) {
      if (!naming::valid_stream_name(*v)) sub.fail("labels_stream", "'" + *v + "' is not a valid stream name");
      st.labels_stream = *v;
    }
    if (auto v = sub.get_enum("task", {"binary", "multiclass", "regression"})) st.task = *parse_task(*v);
    if (auto v = sub.get_bool("prejoined")) st.prejoined = *v;
    auto slice = sub.child("slice");
    if (!slice.is_null()) {
      auto column = slice.get_string("column");
      if (!column || column->empty() || column->size() > 63) slice.fail("column", "a feature name (1..63 characters) is required");
      st.slice_column = *column;
      if (auto v = slice.get_int("max_values", 1, kMaxSliceValues)) st.slice_max_values = static_cast<std::uint32_t>(*v);
      slice.finish();
    }
    if (auto v = sub.get_string_list("inputs")) {
      for (const auto& in : *v) {
        if (!naming::valid_stream_name(in)) sub.fail("inputs", "'" + in + "' is not a valid stream name");
      }
      st.inputs = *v;
    }
    if (auto v = sub.get_double("floor", 0.0, 1.0)) st.floor = *v;
    sub.finish();
    if (st.prejoined) {
      if (!st.labels_stream.empty()) sub.fail("labels_stream", "a prejoined stream carries its labels");
      st.labels_stream = name;  // its rows are both: the table is named after it
    }
    if (st.labels_stream.empty()) sub.fail("", "labels_stream is required (or prejoined: true)");
    if (st.task == format::Task::none) sub.fail("", "task is required (binary, multiclass or regression)");
    c.streams[name] = st;
  }
  s.finish();
  return c;
}

}  // namespace mltap::performance
