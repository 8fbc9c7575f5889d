#include "core/config_reader.hpp"

#include <cctype>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include <yaml-cpp/yaml.h>

namespace mltap::core {

struct ConfigNode {
  YAML::Node node;
};

namespace {

std::shared_ptr<const ConfigNode> wrap(YAML::Node n) {
  return std::make_shared<const ConfigNode>(ConfigNode{std::move(n)});
}

int line_of(const YAML::Node& n) { return n ? n.Mark().line + 1 : 0; }
int col_of(const YAML::Node& n) { return n ? n.Mark().column + 1 : 0; }

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

// Splits "250ms" into 250 and "ms". Rejects signs, exponents and trailing junk.
bool split_number_unit(const std::string& text, double& number, std::string& unit) {
  const std::string t = trim(text);
  size_t i = 0;
  bool digits = false, dot = false;
  while (i < t.size() && (std::isdigit(static_cast<unsigned char>(t[i])) || (t[i] == '.' && !dot))) {
    if (t[i] == '.') dot = true; else digits = true;
    ++i;
  }
  if (!digits) return false;
  try {
    number = std::stod(t.substr(0, i));
  } catch (...) {
    return false;
  }
  unit = trim(t.substr(i));
  return std::isfinite(number);
}

}  // namespace

std::optional<std::chrono::nanoseconds> parse_duration(const std::string& text) {
  double n = 0;
  std::string unit;
  if (!split_number_unit(text, n, unit)) return std::nullopt;
  double scale = 0;
  if (unit == "ns") scale = 1;
  else if (unit == "us") scale = 1e3;
  else if (unit == "ms") scale = 1e6;
  else if (unit == "s" || unit.empty()) scale = 1e9;
  else if (unit == "m") scale = 60e9;
  else if (unit == "h") scale = 3600e9;
  else if (unit == "d") scale = 86400e9;
  else return std::nullopt;
  const double ns = n * scale;
  if (ns > 1e18) return std::nullopt;
  return std::chrono::nanoseconds(static_cast<std::int64_t>(std::llround(ns)));
}

std::optional<std::uint64_t> parse_bytes(const std::string& text) {
  double n = 0;
  std::string unit;
  if (!split_number_unit(text, n, unit)) return std::nullopt;
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "KiB") scale = 1024.0;
  else if (unit == "MiB") scale = 1024.0 * 1024;
  else if (unit == "GiB") scale = 1024.0 * 1024 * 1024;
  else if (unit == "KB" || unit == "kB") scale = 1e3;
  else if (unit == "MB") scale = 1e6;
  else if (unit == "GB") scale = 1e9;
  else return std::nullopt;
  const double b = n * scale;
  if (b > 1e18 || b != std::floor(b)) return std::nullopt;
  return static_cast<std::uint64_t>(b);
}

ConfigDocument::ConfigDocument() : root_(wrap(YAML::Node())) {}
ConfigDocument::ConfigDocument(std::shared_ptr<const ConfigNode> root) : root_(std::move(root)) {}
ConfigDocument::~ConfigDocument() = default;
ConfigDocument::ConfigDocument(const ConfigDocument&) = default;
ConfigDocument& ConfigDocument::operator=(const ConfigDocument&) = default;

ConfigSection::ConfigSection(const ConfigDocument& document, std::string file, std::string path)
    : ConfigSection(document.root_, std::move(file), std::move(path)) {}

ConfigSection::ConfigSection(std::shared_ptr<const ConfigNode> node, std::string file,
                             std::string path)
    : node_(std::move(node)), file_(std::move(file)), path_(std::move(path)),
      seen_(std::make_shared<std::set<std::string>>()) {
  const YAML::Node& n = node_->node;
  if (n && !n.IsNull() && !n.IsMap()) {
    throw ConfigError(file_, line_of(n), col_of(n),
                      "'" + (path_.empty() ? std::string("top level") : path_) +
                          "' must be a mapping of keys to values");
  }
}

ConfigSection::~ConfigSection() = default;
ConfigSection::ConfigSection(const ConfigSection&) = default;
ConfigSection& ConfigSection::operator=(const ConfigSection&) = default;
ConfigSection::ConfigSection(ConfigSection&&) noexcept = default;
ConfigSection& ConfigSection::operator=(ConfigSection&&) noexcept = default;

bool ConfigSection::is_null() const { return !node_->node || node_->node.IsNull(); }

bool ConfigSection::has(const std::string& key) const {
  const YAML::Node& map = node_->node;  // const: operator[] must not insert the key
  if (!map || !map.IsMap()) return false;
  return map[key].IsDefined() && !map[key].IsNull();
}

std::shared_ptr<const ConfigNode> ConfigSection::value(const std::string& key) {
  seen_->insert(key);
  // Undefined tests false, unlike YAML::Node().
  static const auto absent = wrap(YAML::Node(YAML::NodeType::Undefined));
  const YAML::Node& map = node_->node;  // const: operator[] must not insert the key
  if (!map || !map.IsMap()) return absent;
  YAML::Node v = map[key];
  if (!v.IsDefined() || v.IsNull()) return absent;
  return wrap(std::move(v));
}

void ConfigSection::fail(const std::string& key, const std::string& what) const {
  const YAML::Node& map = node_->node;
  YAML::Node at = map;
  if (!key.empty() && map && map.IsMap() && map[key].IsDefined()) at = map[key];
  const std::string where = key.empty() ? path_ : (path_.empty() ? key : path_ + "." + key);
  throw ConfigError(file_, line_of(at), col_of(at), "'" + where + "': " + what);
}

std::optional<std::string> ConfigSection::get_string(const std::string& key) {
  const auto held = value(key);
  const YAML::Node& v = held->node;
  if (!v) return std::nullopt;
  if (!v.IsScalar()) fail(key, "expected a string");
  return v.Scalar();
}

std::optional<bool> ConfigSection::get_bool(const std::string& key) {
  const auto held = value(key);
  const YAML::Node& v = held->node;
  if (!v) return std::nullopt;
  if (!v.IsScalar()) fail(key, "expected true or false");
  const std::string s = v.Scalar();
  if (s == "true" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "no" || s == "off") return false;
  fail(key, "expected true or false, got '" + s + "'");
}

std::optional<std::int64_t> ConfigSection::get_int(const std::string& key, std::int64_t min,
                                                   std::int64_t max) {
  const auto held = value(key);
  const YAML::Node& v = held->node;
  if (!v) return std::nullopt;
  if (!v.IsScalar()) fail(key, "expected an integer");
  const std::string s = trim(v.Scalar());
  std::int64_t out = 0;
  size_t used = 0;
  try {
    out = std::stoll(s, &used, 10);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != s.size()) fail(key, "expected an integer, got '" + s + "'");
  if (out < min || out > max) {
    fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                  ", got " + s);
  }
  return out;
}

std::optional<double> ConfigSection::get_double(const std::string& key, double min, double max) {
  const auto held = value(key);
  const YAML::Node& v = held->node;
  if (!v) return std::nullopt;
  if (!v.IsScalar()) fail(key, "expected a number");
  const std::string s = trim(v.Scalar());
  double out = 0;
  size_t used = 0;
  try {
    out = std::stod(s, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != s.size() || !std::isfinite(out)) {
    fail(key, "expected a finite number, got '" + s + "'");
  }
  if (out < min || out > max) {
    std::ostringstream m;
    m << "must be between " << min << " and " << max << ", got " << s;
    fail(key, m.str());
  }
  return out;
}

std::optional<std::chrono::nanoseconds> ConfigSection::get_duration(
    const std::string& key, std::chrono::nanoseconds min, std::chrono::nanoseconds max) {
  const auto held = value(key);
  const YAML::Node& v = held->node;
  if (!v) return std::nullopt;
  if (!v.IsScalar()) fail(key, "expected a duration such as 250ms, 5s or 2m");
  auto d = parse_duration(v.Scalar());
  if (!d) fail(key, "expected a duration such as 250ms, 5s or 2m, got '" + v.Scalar() + "'");
  if (*d < min || *d > max) {
    fail(key, "must be between " + std::to_string(min.count()) + "ns and " +
                  std::to_string(max.count()) + "ns, got " + v.Scalar());
  }
  return d;
}

std::optional<std::uint64_t> ConfigSection::get_bytes(const std::string& key, std::uint64_t min,
                                                      std::uint64_t max) {
  const auto held = value(key);
  const YAML::Node& v = held->node;
  if (!v) return std::nullopt;
  if (!v.IsScalar()) fail(key, "expected a size such as 4MiB");
  auto b = parse_bytes(v.Scalar());
  if (!b) fail(key, "expected a size such as 4096, 64KiB or 4MiB, got '" + v.Scalar() + "'");
  if (*b < min || *b > max) {
    fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                  " bytes, got " + v.Scalar());
  }
  return b;
}

std::optional<std::vector<std::string>> ConfigSection::get_string_list(const std::string& key) {
  const auto held = value(key);
  const YAML::Node& v = held->node;
  if (!v) return std::nullopt;
  if (!v.IsSequence()) fail(key, "expected a list of strings");
  std::vector<std::string> out;
  for (const auto& item : v) {
    if (!item.IsScalar()) {
      throw ConfigError(file_, line_of(item), col_of(item),
                        "'" + path_ + "." + key + "': every item must be a string");
    }
    out.push_back(item.Scalar());
  }
  return out;
}

std::optional<std::vector<std::pair<std::string, std::vector<std::int64_t>>>>
ConfigSection::get_int_list_map(const std::string& key, std::int64_t min, std::int64_t max,
                                const std::function<std::string(const std::string&)>& check_name) {
  const auto held = value(key);
  const YAML::Node& v = held->node;
  if (!v) return std::nullopt;
  if (!v.IsMap()) fail(key, "expected a mapping of names to lists of integers");
  const std::string p = path_.empty() ? key : path_ + "." + key;
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> out;
  for (const auto& kv : v) {
    const std::string name = kv.first.Scalar();
    const std::string bad = check_name(name);
    if (!bad.empty()) {
      throw ConfigError(file_, line_of(kv.first), col_of(kv.first), "'" + p + "': '" + name + "': " + bad);
    }
    if (!kv.second.IsSequence()) {
      throw ConfigError(file_, line_of(kv.second), col_of(kv.second),
                        "'" + p + "." + name + "': expected a list of integers");
    }
    std::vector<std::int64_t> values;
    for (const auto& item : kv.second) {
      std::int64_t n = 0;
      std::size_t used = 0;
      const std::string text = item.IsScalar() ? trim(item.Scalar()) : std::string();
      try {
        n = std::stoll(text, &used, 10);
      } catch (...) {
        used = 0;
      }
      if (!item.IsScalar() || used == 0 || used != text.size() || n < min || n > max) {
        throw ConfigError(file_, line_of(item), col_of(item),
                          "'" + p + "." + name + "': every item must be an integer between " +
                              std::to_string(min) + " and " + std::to_string(max));
      }
      values.push_back(n);
    }
    out.emplace_back(name, std::move(values));
  }
  return out;
}

std::optional<std::string> ConfigSection::get_enum(const std::string& key,
                                                   const std::vector<std::string>& allowed) {
  auto s = get_string(key);
  if (!s) return s;
  for (const auto& a : allowed) {
    if (*s == a) return s;
  }
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  fail(key, "must be one of " + list + "; got '" + *s + "'");
}

ConfigSection ConfigSection::child(const std::string& key) {
  const auto held = value(key);
  const YAML::Node& v = held->node;
  const std::string p = path_.empty() ? key : path_ + "." + key;
  if (v && !v.IsMap()) fail(key, "expected a mapping");
  return ConfigSection(held, file_, p);
}

std::vector<ConfigSection> ConfigSection::child_list(const std::string& key) {
  const auto held = value(key);
  const YAML::Node& v = held->node;
  std::vector<ConfigSection> out;
  if (!v) return out;
  if (!v.IsSequence()) fail(key, "expected a list");
  const std::string p = path_.empty() ? key : path_ + "." + key;
  size_t i = 0;
  for (const auto& item : v) {
    const std::string ip = p + "[" + std::to_string(i++) + "]";
    if (!item.IsMap()) throw ConfigError(file_, line_of(item), col_of(item), "'" + ip + "': expected a mapping");
    out.push_back(ConfigSection(wrap(item), file_, ip));
  }
  return out;
}

std::vector<std::pair<std::string, ConfigSection>> ConfigSection::child_map(const std::string& key) {
  const auto held = value(key);
  const YAML::Node& v = held->node;
  std::vector<std::pair<std::string, ConfigSection>> out;
  if (!v) return out;
  if (!v.IsMap()) fail(key, "expected a mapping of names to settings");
  const std::string p = path_.empty() ? key : path_ + "." + key;
  for (const auto& kv : v) {
    const std::string name = kv.first.Scalar();
    const std::string ip = p + "." + name;
    if (!kv.second.IsNull() && !kv.second.IsMap()) {
      throw ConfigError(file_, line_of(kv.second), col_of(kv.second), "'" + ip + "': expected a mapping");
    }
    out.emplace_back(name, ConfigSection(wrap(kv.second), file_, ip));
  }
  return out;
}

void ConfigSection::finish() const {
  const YAML::Node& map = node_->node;
  if (!map || !map.IsMap()) return;
  for (const auto& kv : map) {
    const std::string k = kv.first.Scalar();
    if (!seen_->count(k)) {
      throw ConfigError(file_, line_of(kv.first), col_of(kv.first),
                        "unknown key '" + k + "'" + (path_.empty() ? "" : " in '" + path_ + "'"));
    }
  }
}

namespace {

// yaml-cpp keeps every entry of a map whose key repeats and node[key] answers with the first, so
// a second `agent:` section (two files pasted together) would be silently ignored.
void refuse_duplicate_keys(const YAML::Node& n, const std::string& name, int depth = 0) {
  if (depth > 64) throw ConfigError(name, line_of(n), col_of(n), "nesting deeper than 64 levels");
  if (n.IsSequence()) {
    for (const auto& child : n) refuse_duplicate_keys(child, name, depth + 1);
    return;
  }
  if (!n.IsMap()) return;
  std::map<std::string, YAML::Node> keys;
  for (const auto& kv : n) {
    if (kv.first.IsScalar()) {
      const auto [it, fresh] = keys.emplace(kv.first.Scalar(), kv.first);
      if (!fresh) {
        throw ConfigError(name, line_of(kv.first), col_of(kv.first),
                          "duplicate key '" + kv.first.Scalar() + "' (first at line " +
                              std::to_string(line_of(it->second)) + ")");
      }
    }
    refuse_duplicate_keys(kv.second, name, depth + 1);
  }
}

// Settings only: flow or block style, quoting and comments do not show.
void canonical(const YAML::Node& n, std::string& out) {
  const auto scalar = [&out](const std::string& v) {
    out += '"';
    for (char c : v) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  };
  if (n.IsMap()) {
    out += '{';
    for (const auto& kv : n) {
      canonical(kv.first, out);
      out += ':';
      canonical(kv.second, out);
      out += ',';
    }
    out += '}';
  } else if (n.IsSequence()) {
    out += '[';
    for (const auto& child : n) {
      canonical(child, out);
      out += ',';
    }
    out += ']';
  } else if (n.IsScalar()) {
    scalar(n.Scalar());
  } else {
    out += "~";
  }
}

}  // namespace

std::string ConfigDocument::section_text(const std::string& key) const {
  const YAML::Node& root = root_->node;
  if (!root.IsMap()) return {};
  const YAML::Node n = root[key];
  if (!n) return {};
  std::string out;
  canonical(n, out);
  return out;
}

ConfigDocument load_text(const std::string& text, const std::string& name) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(name, e.mark.line + 1, e.mark.column + 1, e.msg);
  }
  refuse_duplicate_keys(root, name);
  return ConfigDocument(wrap(std::move(root)));
}

ConfigDocument load_file(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw ConfigError(file, 0, 0, "cannot read file");
  std::stringstream ss;
  ss << in.rdbuf();
  return load_text(ss.str(), file);
}

}  // namespace mltap::core
