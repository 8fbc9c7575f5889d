#include "core/finding_json.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace mltap::core {
namespace {

using json = nlohmann::json;

json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

double double_or_nan(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : NAN;
}

constexpr FindingKind kAllKinds[] = {FindingKind::drift,           FindingKind::data_quality,
                                     FindingKind::schema_change,   FindingKind::staleness,
                                     FindingKind::throughput,      FindingKind::sequential_change,
                                     FindingKind::prediction_drift, FindingKind::embedding_drift,
                                     FindingKind::performance};

}  // namespace

json finding_state_json(const Finding& f) {
  json top = json::array();
  for (const auto& t : f.top) {
    json e = {{"feature", t.feature}, {"method", t.method}, {"score", number_or_null(t.score)},
              {"threshold", number_or_null(t.threshold)}, {"p_value", number_or_null(t.p_value)},
              {"detail", t.detail}};
    if (t.alarm_record > 0) {
      e["alarm_record"] = t.alarm_record;
      e["onset_record"] = t.onset_record;
    }
    top.push_back(std::move(e));
  }
  return {{"id", f.id},
          {"kind", std::string(finding_kind_name(f.kind))},
          {"reason", f.reason},
          {"severity", std::string(severity_name(f.severity))},
          {"opened_unix_ns", f.opened_unix_ns},
          {"updated_unix_ns", f.updated_unix_ns},
          {"summary", f.summary},
          {"top", std::move(top)},
          {"window_records", f.window_records},
          {"onset_unix_ns", f.onset_unix_ns},
          {"onset_basis", f.onset_basis},
          {"onset_resolution_ns", f.onset_resolution_ns},
          {"supersedes", f.supersedes}};
}

Finding finding_from_state_json(const json& j, const std::string& stream, const std::string& component) {
  Finding f;
  f.id = j.at("id").get<std::uint64_t>();
  if (f.id == 0) throw std::invalid_argument("finding id 0");
  const auto kind = j.at("kind").get<std::string>();
  const auto k = std::find_if(std::begin(kAllKinds), std::end(kAllKinds),
                              [&](FindingKind c) { return finding_kind_name(c) == kind; });
  if (k == std::end(kAllKinds)) throw std::invalid_argument("unknown finding kind '" + kind + "'");
  f.kind = *k;
  const auto sev = j.at("severity").get<std::string>();
  bool known = false;
  for (auto s : {Severity::info, Severity::warning, Severity::critical}) {
    if (severity_name(s) == sev) {
      f.severity = s;
      known = true;
    }
  }
  if (!known) throw std::invalid_argument("unknown severity '" + sev + "'");
  f.stream = stream;
  f.component = component;
  f.reason = j.at("reason").get<std::string>();
  f.opened_unix_ns = j.at("opened_unix_ns").get<std::uint64_t>();
  f.updated_unix_ns = j.at("updated_unix_ns").get<std::uint64_t>();
  f.summary = j.at("summary").get<std::string>();
  f.window_records = j.at("window_records").get<std::uint64_t>();
  for (const auto& t : j.at("top")) {
    FeatureEffect e;
    e.feature = t.at("feature").get<std::string>();
    e.method = t.at("method").get<std::string>();
    e.score = double_or_nan(t, "score");
    e.threshold = double_or_nan(t, "threshold");
    e.p_value = double_or_nan(t, "p_value");
    e.detail = t.at("detail").get<std::string>();
    e.alarm_record = t.value("alarm_record", std::uint64_t{0});  // absent before CUSUM records
    e.onset_record = t.value("onset_record", std::uint64_t{0});
    f.top.push_back(std::move(e));
  }
  f.onset_unix_ns = std::min(j.value("onset_unix_ns", std::uint64_t{0}), f.opened_unix_ns);
  f.onset_basis = f.onset_unix_ns ? j.value("onset_basis", std::string("opened")) : std::string("opened");
  f.onset_resolution_ns = f.onset_unix_ns ? j.value("onset_resolution_ns", std::uint64_t{0}) : 0;
  f.supersedes = j.value("supersedes", std::uint64_t{0});
  return f;
}

}  // namespace mltap::core
