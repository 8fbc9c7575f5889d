#include "exporters/webhook/webhook_payload.hpp"

#include <cctype>
#include <limits>

#include <nlohmann/json.hpp>

namespace mltap::webhook {
namespace {

using nlohmann::json;

// Depth of [ and { outside strings; the parser is not asked to build hostile nestings.
std::size_t nesting_depth(std::string_view s) {
  std::size_t depth = 0, max = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') max = std::max(max, ++depth);
    else if ((c == ']' || c == '}') && depth > 0) --depth;
  }
  return max;
}

bool valid_label_name(std::string_view n) {
  if (n.empty() || n.size() > 128) return false;
  for (std::size_t i = 0; i < n.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(n[i]);
    if (!(c == '_' || std::isalpha(c) || (i > 0 && std::isdigit(c)))) return false;
  }
  return true;
}

struct Fail {
  PayloadError error;
  std::string message;
};

class Reader {
 public:
  explicit Reader(const PayloadLimits& l) : limits_(l) {}

  const json& field(const json& obj, const char* key, const std::string& where) const {
    auto it = obj.find(key);
    if (it == obj.end()) throw Fail{PayloadError::invalid, where + key + ": missing"};
    return *it;
  }
  std::string string(const json& obj, const char* key, const std::string& where,
                     std::size_t max = 0) const {
    const json& v = field(obj, key, where);
    if (!v.is_string()) throw Fail{PayloadError::invalid, where + key + ": must be a string"};
    const auto& s = v.get_ref<const std::string&>();
    if (s.size() > (max ? max : limits_.max_string_bytes)) {
      throw Fail{PayloadError::invalid, where + key + ": longer than " + std::to_string(max ? max : limits_.max_string_bytes) + " bytes"};
    }
    return s;
  }
  core::AlertStatus status(const json& obj, const std::string& where) const {
    const std::string s = string(obj, "status", where);
    if (s == "firing") return core::AlertStatus::firing;
    if (s == "resolved") return core::AlertStatus::resolved;
    throw Fail{PayloadError::invalid, where + "status: '" + s.substr(0, 64) + "' is neither firing nor resolved"};
  }
  core::LabelSet labels(const json& obj, const char* key, const std::string& where,
                         std::size_t max_value) const {
    const json& v = field(obj, key, where);
    if (!v.is_object()) throw Fail{PayloadError::invalid, where + key + ": must be an object"};
    if (v.size() > limits_.max_labels) {
      throw Fail{PayloadError::invalid, where + key + ": more than " + std::to_string(limits_.max_labels) + " entries"};
    }
    core::LabelSet out;
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (!valid_label_name(it.key())) {
        throw Fail{PayloadError::invalid, where + key + ": '" + it.key().substr(0, 64) + "' is not a label name"};
      }
      if (!it.value().is_string()) {
        throw Fail{PayloadError::invalid, where + key + "." + it.key() + ": must be a string"};
      }
      const auto& s = it.value().get_ref<const std::string&>();
      if (s.size() > max_value) {
        throw Fail{PayloadError::invalid, where + key + "." + it.key() + ": longer than " + std::to_string(max_value) + " bytes"};
      }
      out.emplace(it.key(), s);
    }
    return out;
  }
  std::string time(const json& obj, const char* key, const std::string& where, std::int64_t* ns) const {
    std::string s = string(obj, key, where, 64);
    auto parsed = parse_rfc3339_ns(s);
    if (!parsed) throw Fail{PayloadError::invalid, where + key + ": '" + s + "' is not an RFC 3339 time"};
    if (ns) *ns = *parsed;
    return s;
  }

 private:
  const PayloadLimits& limits_;
};

bool digits(std::string_view s, std::size_t pos, std::size_t n, int& out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    v = v * 10 + (s[i] - '0');
  }
  out = v;
  return true;
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

}  // namespace

std::optional<std::int64_t> parse_rfc3339_ns(std::string_view s) {
  int year, month, day, hour, minute, second;
  if (!digits(s, 0, 4, year) || s.size() < 20 || s[4] != '-' || !digits(s, 5, 2, month) || s[7] != '-' ||
      !digits(s, 8, 2, day) || (s[10] != 'T' && s[10] != 't') || !digits(s, 11, 2, hour) || s[13] != ':' ||
      !digits(s, 14, 2, minute) || s[16] != ':' || !digits(s, 17, 2, second)) {
    return std::nullopt;
  }
  static constexpr int kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (year < 1 || month < 1 || month > 12 || day < 1 || day > kDays[month - 1] || hour > 23 ||
      minute > 59 || second > 60) {
    return std::nullopt;
  }
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  if (month == 2 && day == 29 && !leap) return std::nullopt;
  std::size_t pos = 19;
  std::int64_t nanos = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    std::size_t n = 0;
    while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) {
      if (n < 9) nanos = nanos * 10 + (s[pos] - '0');
      ++n;
      ++pos;
    }
    if (n == 0) return std::nullopt;
    for (std::size_t i = n; i < 9; ++i) nanos *= 10;
  }
  std::int64_t offset_s = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int oh, om;
    if (!digits(s, pos + 1, 2, oh) || pos + 3 >= s.size() || s[pos + 3] != ':' || !digits(s, pos + 4, 2, om) ||
        oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset_s = (oh * 3600 + om * 60) * (s[pos] == '+' ? 1 : -1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  const std::int64_t secs = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * 86400 +
                            hour * 3600 + minute * 60 + second - offset_s;
  // int64 nanoseconds cover 1677..2262; saturate beyond (Go's zero time is year 1).
  constexpr std::int64_t kMaxSecs = std::numeric_limits<std::int64_t>::max() / 1'000'000'000 - 1;
  if (secs <= -kMaxSecs) return -kMaxSecs * 1'000'000'000;
  if (secs >= kMaxSecs) return kMaxSecs * 1'000'000'000;
  return secs * 1'000'000'000 + nanos;
}

ParseResult parse_webhook_payload(std::string_view body, const PayloadLimits& limits) {
  ParseResult result;
  if (nesting_depth(body) > limits.max_depth) {
    result.error = PayloadError::syntax;
    result.message = "JSON nested deeper than " + std::to_string(limits.max_depth) + " levels";
    return result;
  }
  json doc;
  try {
    doc = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {
    // Not only parse_error: a number beyond double's range ("1e400") is out_of_range (406),
    // which used to escape as a 500 "internal error" instead of this 400.
    result.error = PayloadError::syntax;
    result.message = std::string("malformed JSON: ") + e.what();
    return result;
  }
  try {
    if (!doc.is_object()) throw Fail{PayloadError::invalid, "payload: must be a JSON object"};
    Reader r(limits);
    WebhookPayload p;
    p.version = r.string(doc, "version", "", 16);
    if (p.version != "4") throw Fail{PayloadError::version, "version: '" + p.version + "' is not supported (want \"4\")"};
    p.group_key = r.string(doc, "groupKey", "");
    if (auto it = doc.find("truncatedAlerts"); it != doc.end()) {
      if (!it->is_number_unsigned()) throw Fail{PayloadError::invalid, "truncatedAlerts: must be a non-negative integer"};
      p.truncated_alerts = it->get<std::uint64_t>();
    }
    p.status = r.status(doc, "");
    p.receiver = r.string(doc, "receiver", "");
    p.group_labels = r.labels(doc, "groupLabels", "", limits.max_label_value_bytes);
    p.common_labels = r.labels(doc, "commonLabels", "", limits.max_label_value_bytes);
    p.common_annotations = r.labels(doc, "commonAnnotations", "", limits.max_annotation_value_bytes);
    p.external_url = r.string(doc, "externalURL", "");
    const json& alerts = r.field(doc, "alerts", "");
    if (!alerts.is_array()) throw Fail{PayloadError::invalid, "alerts: must be an array"};
    if (alerts.size() > limits.max_alerts) {
      throw Fail{PayloadError::too_many, "alerts: " + std::to_string(alerts.size()) + " alerts, at most " +
                                             std::to_string(limits.max_alerts) + " per request (set max_alerts in Alertmanager)"};
    }
    p.alerts.reserve(alerts.size());
    for (std::size_t i = 0; i < alerts.size(); ++i) {
      const std::string where = "alerts[" + std::to_string(i) + "].";
      const json& a = alerts[i];
      if (!a.is_object()) throw Fail{PayloadError::invalid, where.substr(0, where.size() - 1) + ": must be an object"};
      WebhookAlert w;
      w.status = r.status(a, where);
      w.labels = r.labels(a, "labels", where, limits.max_label_value_bytes);
      w.annotations = r.labels(a, "annotations", where, limits.max_annotation_value_bytes);
      w.starts_at = r.time(a, "startsAt", where, &w.starts_at_unix_ns);
      w.ends_at = r.time(a, "endsAt", where, nullptr);
      w.generator_url = r.string(a, "generatorURL", where);
      w.fingerprint = r.string(a, "fingerprint", where, 64);
      bool hex = !w.fingerprint.empty();
      for (char c : w.fingerprint) hex = hex && std::isxdigit(static_cast<unsigned char>(c));
      if (!hex) throw Fail{PayloadError::invalid, where + "fingerprint: must be 1 to 64 hex digits"};
      p.alerts.push_back(std::move(w));
    }
    result.payload = std::move(p);
  } catch (const Fail& f) {
    result.error = f.error;
    result.message = f.message;
  }
  return result;
}

}  // namespace mltap::webhook
