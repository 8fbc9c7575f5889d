#include "agent/api/detector_json.hpp"

#include <cmath>

#include <nlohmann/json.hpp>

#include "agent/api/json_reply.hpp"

namespace mltap::api {

using core::DetectorSnapshot;
using core::DetectorStreamSnapshot;
using core::feature_kind_name;
using core::FeatureEffect;
using core::FeatureResult;
using core::Finding;
using core::finding_kind_name;
using core::MethodScore;
using core::reference_source_name;
using core::severity_name;

using nlohmann::json;

namespace {

json scores(const std::vector<MethodScore>& v) {
  json a = json::array();
  for (const auto& m : v) {
    a.push_back({{"method", m.method},
                 {"score", json_number_or_null(m.score)},
                 {"threshold", json_number_or_null(m.threshold)},
                 {"p_value", json_number_or_null(m.p_value)},
                 {"error_bound", json_number_or_null(m.error_bound)},
                 {"noise_floor", json_number_or_null(m.noise_floor)},
                 {"decision_level", json_number_or_null(m.decision_level)},
                 {"powered", m.powered},
                 {"decides", m.decides}});
  }
  return a;
}
}  // namespace

json to_json(const FeatureEffect& e) {
  json j = {{"feature", e.feature}, {"method", e.method},   {"score", json_number_or_null(e.score)},
            {"threshold", json_number_or_null(e.threshold)}, {"p_value", json_number_or_null(e.p_value)}, {"detail", e.detail},
            {"min_detectable_effect", json_number_or_null(e.min_detectable)}};
  if (e.alarm_record > 0) {
    j["alarm_record"] = e.alarm_record;
    j["onset_record"] = e.onset_record;
  }
  return j;
}

json to_json(const Finding& f) {
  json top = json::array();
  for (const auto& e : f.top) top.push_back(to_json(e));
  return {{"id", f.id},
          {"stream", f.stream},
          {"component", f.component},
          {"kind", std::string(finding_kind_name(f.kind))},
          {"reason", f.reason},
          {"severity", std::string(severity_name(f.severity))},
          {"open", f.open()},
          {"opened_unix_ns", f.opened_unix_ns},
          {"updated_unix_ns", f.updated_unix_ns},
          {"closed_unix_ns", f.closed_unix_ns},
          {"summary", f.summary},
          {"top", std::move(top)},
          {"window_records", f.window_records},
          {"onset_unix_ns", f.onset_or_opened()},
          {"onset_basis", f.onset_unix_ns != 0 ? f.onset_basis : std::string("opened")},
          {"onset_resolution_ns", f.onset_resolution_ns},
          {"supersedes", f.supersedes}};
}

json to_json(const FeatureResult& r) {
  return {{"name", r.name},
          {"kind", feature_kind_name(r.kind)},
          {"enabled", r.enabled},
          {"drifted", r.drifted},
          {"scores", scores(r.scores)},
          {"previous_window", scores(r.previous)},
          {"quality", {{"nan_ratio", json_number_or_null(r.nan_ratio)},
                       {"inf_ratio", json_number_or_null(r.inf_ratio)},
                       {"out_of_range_ratio", json_number_or_null(r.out_of_range_ratio)},
                       {"unseen_ratio", json_number_or_null(r.unseen_ratio)},
                       {"flags", r.quality_flags}}},
          {"values", r.values},
          {"mean", json_number_or_null(r.mean)},
          {"sd", json_number_or_null(r.sd)},
          {"min", json_number_or_null(r.min)},
          {"max", json_number_or_null(r.max)},
          {"reference_mean", json_number_or_null(r.ref_mean)},
          {"reference_sd", json_number_or_null(r.ref_sd)},
          {"sequential_ratio", json_number_or_null(r.sequential_ratio)},
          {"max_ratio", json_number_or_null(r.max_ratio)},
          {"max_method", r.max_method},
          {"min_detectable_effect", {{"method", r.min_detectable_method}, {"value", json_number_or_null(r.min_detectable)}}},
          {"power_note", core::power_note(r)}};
}

json to_json(const DetectorStreamSnapshot& s) {
  json feats = json::array();
  if (s.features) {
    for (const auto& f : *s.features) feats.push_back(to_json(f));
  }
  return {{"name", s.name},
          {"component", s.component},
          {"kind", s.kind},
          {"layout", s.layout},
          {"reference", {{"source", reference_source_name(s.reference)},
                         {"path", s.reference_path},
                         {"error", s.reference_error},
                         {"rows", s.reference_rows},
                         {"pin_progress", s.pin_progress},
                         {"pin_target", s.pin_target}}},
          {"records_total", s.records_total},
          {"records_rejected", s.records_rejected},
          {"windows_closed", s.windows_closed},
          {"last_window_records", s.last_window_records},
          {"last_window_end_unix_ns", s.last_window_end_unix_ns},
          {"drift_detected", s.drift_detected},
          {"drifted_features", s.drifted_features},
          {"features_analyzed", s.features_analyzed},
          {"features_cut", s.features_cut},
          {"embedding", {{"mean_shift", json_number_or_null(s.embedding_mean_shift)}, {"mean_cosine_distance", json_number_or_null(s.embedding_mean_cosine)}}},
          {"memory_bytes", s.memory_bytes},
          {"features", std::move(feats)}};
}

json to_json(const DetectorSnapshot& s) {
  json streams = json::array();
  for (const auto& st : s.streams) streams.push_back(to_json(*st));
  json open = json::array(), closed = json::array();
  for (const auto& f : s.open_findings) open.push_back(to_json(f));
  for (const auto& f : s.closed_findings) closed.push_back(to_json(f));
  const auto& c = s.counters;
  return {{"generated_unix_ns", s.generated_unix_ns},
          {"sequence", s.sequence},
          {"counters", {{"streams_cut", c.streams_cut},
                        {"records_cut", c.records_cut},
                        {"features_cut", c.features_cut},
                        {"records_rejected", c.records_rejected},
                        {"windows_closed", c.windows_closed},
                        {"findings_opened", c.findings_opened},
                        {"findings_superseded", c.findings_superseded}}},
          {"open_findings", std::move(open)},
          {"closed_findings", std::move(closed)},
          {"streams", std::move(streams)}};
}

}  // namespace mltap::api
