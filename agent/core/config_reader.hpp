// Strict reading of YAML configuration: every key must be known, every value well-typed and in
// range, and every error names the file, line and column. Modules parse their own section through
// ConfigSection and call finish() so that unknown keys are errors, not silently ignored.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace mltap::config {

class ConfigError : public std::runtime_error {
 public:
  ConfigError(const std::string& file, int line, int column, const std::string& what)
      : std::runtime_error(format(file, line, column, what)), file_(file), line_(line),
        column_(column) {}
  const std::string& file() const noexcept { return file_; }
  int line() const noexcept { return line_; }      // 1-based, 0 when unknown
  int column() const noexcept { return column_; }  // 1-based, 0 when unknown

 private:
  static std::string format(const std::string& file, int line, int column, const std::string& w) {
    std::string s = file;
    if (line > 0) s += ":" + std::to_string(line) + ":" + std::to_string(column);
    return s + ": " + w;
  }
  std::string file_;
  int line_;
  int column_;
};

// "250ms", "5s", "2m", "1h", "100us", "10ns"; a bare number is seconds.
std::optional<std::chrono::nanoseconds> parse_duration(const std::string& text);
// "64KiB", "4MiB", "1GiB", "4096"; a bare number is bytes.
std::optional<std::uint64_t> parse_bytes(const std::string& text);

class ConfigSection {
 public:
  // `path` is the dotted location for messages ("agent", "streams[2]").
  ConfigSection(YAML::Node node, std::string file, std::string path);

  const std::string& path() const noexcept { return path_; }
  const std::string& file() const noexcept { return file_; }
  bool has(const std::string& key) const;
  bool is_null() const { return !node_ || node_.IsNull(); }

  std::optional<std::string> get_string(const std::string& key);
  std::optional<bool> get_bool(const std::string& key);
  std::optional<std::int64_t> get_int(const std::string& key, std::int64_t min, std::int64_t max);
  std::optional<double> get_double(const std::string& key, double min, double max);
  std::optional<std::chrono::nanoseconds> get_duration(const std::string& key,
                                                       std::chrono::nanoseconds min,
                                                       std::chrono::nanoseconds max);
  std::optional<std::uint64_t> get_bytes(const std::string& key, std::uint64_t min,
                                         std::uint64_t max);
  std::optional<std::vector<std::string>> get_string_list(const std::string& key);
  // One of `allowed`.
  std::optional<std::string> get_enum(const std::string& key,
                                      const std::vector<std::string>& allowed);
  // Map-valued key; an absent key gives a null section (all getters return nullopt).
  ConfigSection child(const std::string& key);
  // Sequence of maps.
  std::vector<ConfigSection> child_list(const std::string& key);
  // Map of name -> map (e.g. per-stream settings); key order preserved.
  std::vector<std::pair<std::string, ConfigSection>> child_map(const std::string& key);

  // Throws ConfigError for the first key that no getter asked for.
  void finish() const;
  // An error located at `key` (or at the section when key is empty).
  [[noreturn]] void fail(const std::string& key, const std::string& what) const;

 private:
  YAML::Node value(const std::string& key);
  YAML::Node node_;
  std::string file_;
  std::string path_;
  std::shared_ptr<std::set<std::string>> seen_;
};

// Loads and parses `file` (syntax errors become ConfigError with line/column). `text` variant is
// for embedded defaults and tests.
YAML::Node load_file(const std::string& file);
YAML::Node load_text(const std::string& text, const std::string& name);

}  // namespace mltap::config
