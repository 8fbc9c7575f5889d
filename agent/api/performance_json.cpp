#include "agent/api/performance_json.hpp"

#include <nlohmann/json.hpp>

#include "agent/api/json_reply.hpp"
#include "core/config_reader.hpp"
#include "core/time.hpp"

namespace mltap::api {

using nlohmann::json;

namespace {

json opt(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

json metrics_json(const core::RealizedMetrics& m) {
  json j = json::object();
  for (const auto& [name, v] : core::named_metrics(m)) j[std::string(name)] = opt(v);
  return j;
}

json counters_json(const core::PerformanceStreamState& s) {
  const auto& c = s.counters;
  json evicted = json::object();
  for (std::size_t i = 0; i < core::kEvictionCauses; ++i) {
    evicted[std::string(core::eviction_cause_name(static_cast<core::EvictionCause>(i)))] = c.evicted[i];
  }
  return json{{"predictions", c.predictions},
              {"predictions_duplicate", c.predictions_duplicate},
              {"predictions_no_trace_id", c.predictions_no_trace_id},
              {"predictions_bad", c.predictions_bad},
              {"labels", c.labels},
              {"labels_no_trace_id", c.labels_no_trace_id},
              {"labels_bad", c.labels_bad},
              {"joined", c.joined},
              {"unmatched", c.unmatched},
              {"duplicate", c.duplicate},
              {"late", c.late},
              {"expired_unlabelled", c.expired_unlabelled},
              {"evicted", evicted}};
}

json stream_summary(const core::PerformanceStreamState& s) {
  json j{{"stream", s.stream},
              {"labels_stream", s.labels_stream},
              {"task", std::string(format::task_name(s.task))},
              {"window_seconds", static_cast<double>(s.window_ns) / 1e9},
              {"label_ttl_seconds", static_cast<double>(s.label_ttl_ns) / 1e9},
              {"counters", counters_json(s)},
              {"pending", {{"predictions", s.pending}, {"waiting_labels", s.waiting_labels},
                           {"joined_markers", s.joined_markers}, {"capacity", s.capacity},
                           {"table_bytes", s.table_bytes}, {"durable", s.durable}}}};
  if (!s.slice_column.empty()) {
    j["slices"] = json{{"column", s.slice_column}, {"max_values", s.slice_max_values},
                       {"rows_over_cap", s.slice_other_rows}, {"rows_invalid", s.slice_invalid_rows},
                       {"rows_missing_column", s.slice_missing_rows}};
  }
  if (s.prejoined) {
    const auto& p = s.prejoined_counters;
    j["prejoined"] = json{{"rows", p.rows},           {"accepted", p.accepted},   {"bad_shape", p.bad_shape},
                          {"bad_prediction", p.bad_prediction}, {"bad_label", p.bad_label},
                          {"bad_time", p.bad_time},   {"future", p.future},       {"too_old", p.too_old}};
  }
  return j;
}

json band_json(const std::optional<core::EstimatedValue>& v) {
  if (!v) return nullptr;
  return json{{"value", v->value}, {"lower", v->lower}, {"upper", v->upper}};
}

// Label-free estimate of a window (docs/performance.md, "Estimates"): its band; the realized
// value is the window's "metrics" beside it.
json estimate_json(const core::PerformanceEstimate& e) {
  json j{{"predictions", e.predictions},
         {"unsupported", e.unsupported},
         {"withheld", e.withheld == core::EstimateWithheld::none
                          ? json(nullptr)
                          : json(std::string(core::estimate_withheld_name(e.withheld)))}};
  if (!e.withheld_detail.empty()) j["withheld_detail"] = e.withheld_detail;
  j["metrics"] = json{{"accuracy", band_json(e.accuracy)},
                      {"precision", band_json(e.precision)},
                      {"recall", band_json(e.recall)},
                      {"f1", band_json(e.f1)}};
  return j;
}

json reference_json(const core::EstimateReference& r) {
  json j{{"source", r.source},   {"pairs", r.pairs},          {"target", r.target},
         {"fitted", r.fitted},   {"calibration", r.calibrated ? "isotonic" : "raw"},
         {"ece_raw", r.ece_raw}, {"ece_isotonic_held_out", r.ece_calibrated}};
  j["fitted_unix_ns"] = r.fitted ? json(r.fitted_unix_ns) : json(nullptr);
  j["fitted_at"] = r.fitted && r.fitted_unix_ns >= 0
                      ? json(core::format_utc(static_cast<std::uint64_t>(r.fitted_unix_ns)))
                      : json(nullptr);
  return j;
}

}  // namespace

json to_json(const core::PerformanceStreamState& s, std::int64_t since) {
  json j = stream_summary(s);
  json bounds = json::array();
  for (double b : core::kLabelLagBucketsSeconds) bounds.push_back(b);
  j["label_lag_bucket_bounds_seconds"] = bounds;  // a last bucket holds the rest
  json windows = json::array();
  for (const auto& w : s.windows) {
    if (w.start_unix_ns + s.window_ns <= since) continue;
    const auto& m = w.metrics;
    windows.push_back(json{{"start_unix_ns", w.start_unix_ns},
                           {"start", core::format_utc(static_cast<std::uint64_t>(w.start_unix_ns))},
                           {"predictions", w.predictions},
                           {"labelled", w.labelled},
                           {"evicted", w.evicted},
                           {"coverage", w.coverage()},
                           {"label_lag_buckets", w.lag_buckets},
                           {"metrics", metrics_json(m)}});
    if (!s.slice_column.empty()) {
      json slices = json::array();
      for (const auto& sl : w.slices) {
        slices.push_back(json{{"slice", sl.value}, {"predictions", sl.predictions}, {"labelled", sl.labelled},
                              {"coverage", sl.coverage()}, {"metrics", metrics_json(sl.metrics)}});
      }
      windows.back()["slices"] = slices;
    }
    if (w.estimate) windows.back()["estimate"] = estimate_json(*w.estimate);
  }
  j["windows"] = windows;
  if (s.reference) j["reference"] = reference_json(*s.reference);
  return j;
}

void register_performance_routes(HttpServer& server, PerformanceSource source) {
  server.get("/api/v1/performance", [source](const HttpRequest& req, HttpResponse& res) {
    const auto snap = source ? source() : nullptr;
    if (!snap) return reply_json_error(res, 503, "the performance component is disabled (performance.enabled)");
    if (!req.has_param("stream")) {
      json streams = json::array();
      for (const auto& s : snap->streams) streams.push_back(stream_summary(s));
      res.set_content(json{{"streams", streams},
                           {"labels_without_predictions_stream", snap->labels_without_predictions_stream}}
                          .dump(),
                      "application/json");
      return;
    }
    const std::string stream = req.param("stream");
    std::chrono::nanoseconds since = std::chrono::hours(24 * 7);
    if (req.has_param("since")) {
      auto d = core::parse_duration(req.param("since"));
      if (!d || d->count() <= 0 || *d > std::chrono::hours(24 * 400)) {
        return reply_json_error(res, 400, "parameter 'since' must be a duration such as 6h or 7d, at most 400d");
      }
      since = *d;
    }
    for (const auto& s : snap->streams) {
      if (s.stream != stream) continue;
      const auto now = static_cast<std::int64_t>(core::unix_now_ns());
      res.set_content(to_json(s, now - since.count()).dump(), "application/json");
      return;
    }
    reply_json_error(res, 404, "no performance for stream '" + stream +
                              "': not a predictions stream with a task and a labels stream");
  }, RouteOptions{Access::read_api, 0, {}, {}});
}

}  // namespace mltap::api
