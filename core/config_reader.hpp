// Strict reading of YAML configuration: every key must be known, every value well-typed and in
// range, and every error names the file, line and column. Modules parse their own section through
// ConfigSection and call finish() so that unknown keys are errors, not silently ignored.
//
// yaml-cpp stays in config_reader.cpp: a document and a section hold their YAML nodes behind an
// opaque pointer, so the many headers that declare a parse_*_config function do not pull it in.
#pragma once

#include <chrono>
#include <functional>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mltap::core {

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

struct ConfigNode;  // a YAML node (config_reader.cpp)

// A parsed YAML document: what load_file/load_text return and a top-level ConfigSection reads.
class ConfigDocument {
 public:
  ConfigDocument();  // an empty document (every key absent)
  ~ConfigDocument();
  ConfigDocument(const ConfigDocument&);
  ConfigDocument& operator=(const ConfigDocument&);

  // The top-level `key`'s value re-emitted as YAML (empty when absent): two documents whose
  // section texts are equal configure that section the same way (comments and layout aside).
  std::string section_text(const std::string& key) const;

 private:
  explicit ConfigDocument(std::shared_ptr<const ConfigNode> root);
  std::shared_ptr<const ConfigNode> root_;
  friend class ConfigSection;
  friend ConfigDocument load_text(const std::string& text, const std::string& name);
};

class ConfigSection {
 public:
  // The document's top level. `path` is the dotted location for messages ("agent", "streams[2]").
  ConfigSection(const ConfigDocument& document, std::string file, std::string path);
  ~ConfigSection();
  ConfigSection(const ConfigSection&);
  ConfigSection& operator=(const ConfigSection&);
  ConfigSection(ConfigSection&&) noexcept;
  ConfigSection& operator=(ConfigSection&&) noexcept;

  const std::string& path() const noexcept { return path_; }
  const std::string& file() const noexcept { return file_; }
  bool has(const std::string& key) const;
  bool is_null() const;

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
  // Map of name -> list of integers in [min, max] (e.g. `stream_owners: {"fraud/*": [1000]}`);
  // `check_name` returns an error text for a bad name (reported at the name), or "".
  std::optional<std::vector<std::pair<std::string, std::vector<std::int64_t>>>> get_int_list_map(
      const std::string& key, std::int64_t min, std::int64_t max,
      const std::function<std::string(const std::string&)>& check_name);
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
  ConfigSection(std::shared_ptr<const ConfigNode> node, std::string file, std::string path);
  std::shared_ptr<const ConfigNode> value(const std::string& key);
  std::shared_ptr<const ConfigNode> node_;  // never null; may hold a null or undefined node
  std::string file_;
  std::string path_;
  std::shared_ptr<std::set<std::string>> seen_;
};

// Loads and parses `file` (syntax errors become ConfigError with line/column). `text` variant is
// for embedded defaults and tests.
ConfigDocument load_file(const std::string& file);
ConfigDocument load_text(const std::string& text, const std::string& name);

}  // namespace mltap::core
