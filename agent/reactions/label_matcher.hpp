// Selects alerts by label, like Alertmanager's matchers: `name = "v"`, `name != "v"`,
// `name =~ "re"`, `name !~ "re"`. Regexes are POSIX extended (what Prometheus' RE2 patterns
// usually are: alternation, classes, repetition), anchored at both ends; a missing label is "".
// A value holding a NUL byte never matches a regex.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/alert.hpp"

namespace mltap::reactions {

class LabelMatcher {
 public:
  enum class Op { equal, not_equal, regex, not_regex };

  // Parses one matcher; on failure returns nullopt and says why in `error`.
  static std::optional<LabelMatcher> parse(std::string_view text, std::string* error);

  bool matches(const core::LabelSet& labels) const;
  const std::string& label() const noexcept { return label_; }
  Op op() const noexcept { return op_; }
  const std::string& value() const noexcept { return value_; }
  std::string to_string() const;

 private:
  LabelMatcher(std::string label, Op op, std::string value);
  std::string label_;
  Op op_;
  std::string value_;
  struct Compiled;
  std::shared_ptr<const Compiled> regex_;  // shared: matchers are copied with their config
};

// Prometheus label name: [a-zA-Z_][a-zA-Z0-9_]*.
bool valid_label_name(std::string_view name) noexcept;

}  // namespace mltap::reactions
