#include "agent/api/streams_json.hpp"

#include <cmath>

#include <nlohmann/json.hpp>

#include "agent/api/json_reply.hpp"

namespace mltap::api {

nlohmann::json streams_to_json(const core::IngestSnapshot& snap) {
  nlohmann::json streams = nlohmann::json::array();
  for (const auto& s : snap.streams) {
    nlohmann::json producers = nlohmann::json::array();
    for (const auto& p : s.producers) {
      producers.push_back({
          {"pid", p.id.pid},
          {"start_ticks", p.id.start_ticks},
          {"component", p.component},
          {"sdk", p.sdk},
          {"uid", p.uid},
          {"state", std::string(core::producer_state_name(p.state))},
          {"segment", p.segment},
          {"lanes_used", p.lanes_used},
          {"rows_written", p.rows_written},
          {"rows_read", p.rows_read},
          {"rows_dropped", p.rows_dropped},
          {"rows_sampled_out", p.rows_sampled_out},
          {"write_rate", json_number_or_null(p.write_rate)},
          {"created_unix_ns", p.created_unix_ns},
          {"last_seen_unix_ns", p.last_seen_unix_ns},
      });
    }
    nlohmann::json dropped = nlohmann::json::object();
    for (std::size_t r = 0; r < s.dropped.size(); ++r) {
      dropped[std::string(core::drop_reason_name(static_cast<core::DropReason>(r)))] = s.dropped[r];
    }
    nlohmann::json invalid = nlohmann::json::object();
    for (std::size_t r = 0; r < s.invalid.size(); ++r) {
      invalid[std::string(core::invalid_reason_name(static_cast<core::InvalidReason>(r)))] = s.invalid[r];
    }
    nlohmann::json features = nlohmann::json::array();
    for (const auto& f : s.features) {
      features.push_back({{"name", f.name},
                          {"values", f.values_total},
                          {"nan", f.nan_total},
                          {"inf", f.inf_total},
                          {"window_count", f.window_count},
                          {"mean", json_number_or_null(f.mean)},
                          {"variance", json_number_or_null(f.variance)},
                          {"min", json_number_or_null(f.min)},
                          {"max", json_number_or_null(f.max)}});
    }
    nlohmann::json shape = s.info.row_shape;
    streams.push_back({
        {"name", s.info.name},
        {"component", s.info.component},
        {"kind", std::string(format::stream_kind_name(s.info.kind))},
        {"dtype", std::string(format::dtype_name(s.info.declared_dtype))},
        {"row_shape", shape},
        {"records", s.records_total},
        {"writes", s.writes_total},
        {"sampled_out", s.sampled_out_total},
        {"dropped", dropped},
        {"invalid", invalid},
        {"schema_mismatch", s.schema_mismatch_total},
        {"restarts", s.restarts_total},
        {"record_rate", json_number_or_null(s.record_rate)},
        {"last_record_unix_ns", s.last_record_unix_ns},
        {"live_producers", s.live_producers},
        {"producers", producers},
        {"features", features},
        {"features_cut", s.features_cut},
    });
  }
  return {{"taken_unix_ns", snap.taken_unix_ns}, {"streams", streams}};
}

}  // namespace mltap::api
