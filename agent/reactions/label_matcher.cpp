#include "agent/reactions/label_matcher.hpp"

#include <regex.h>

#include <cctype>
#include <stdexcept>

namespace mltap::reactions {

using core::LabelSet;

bool valid_label_name(std::string_view name) noexcept {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    const bool ok = c == '_' || std::isalpha(c) || (i > 0 && std::isdigit(c));
    if (!ok) return false;
  }
  return true;
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// A value is either bare (no quotes) or a double-quoted string with \" and \\ escapes.
std::optional<std::string> unquote(std::string_view v, std::string* error) {
  if (v.empty() || v.front() != '"') {
    if (v.find('"') != std::string_view::npos) {
      *error = "unbalanced quote in value";
      return std::nullopt;
    }
    return std::string(v);
  }
  if (v.size() < 2 || v.back() != '"') {
    *error = "value starts with a quote but does not end with one";
    return std::nullopt;
  }
  std::string out;
  for (std::size_t i = 1; i + 1 < v.size(); ++i) {
    if (v[i] == '\\') {
      if (i + 2 >= v.size()) {
        *error = "dangling backslash in value";
        return std::nullopt;
      }
      const char n = v[++i];
      if (n != '"' && n != '\\') {
        *error = std::string("unknown escape \\") + n + " in value";
        return std::nullopt;
      }
      out.push_back(n);
    } else if (v[i] == '"') {
      *error = "unescaped quote inside value";
      return std::nullopt;
    } else {
      out.push_back(v[i]);
    }
  }
  return out;
}

}  // namespace

// A compiled POSIX regex (glibc's matcher does not recurse per input byte, unlike std::regex).
struct LabelMatcher::Compiled {
  regex_t re{};
  explicit Compiled(const std::string& pattern) {
    const std::string anchored = "^(" + pattern + ")$";
    const int rc = ::regcomp(&re, anchored.c_str(), REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
      char msg[256];
      ::regerror(rc, &re, msg, sizeof msg);
      throw std::invalid_argument(msg);
    }
  }
  ~Compiled() { ::regfree(&re); }
  Compiled(const Compiled&) = delete;
  Compiled& operator=(const Compiled&) = delete;
  bool matches(const std::string& v) const {
    if (v.find('\0') != std::string::npos) return false;
    return ::regexec(&re, v.c_str(), 0, nullptr, 0) == 0;
  }
};

LabelMatcher::LabelMatcher(std::string label, Op op, std::string value)
    : label_(std::move(label)), op_(op), value_(std::move(value)) {
  if (op_ == Op::regex || op_ == Op::not_regex) regex_ = std::make_shared<const Compiled>(value_);
}

std::optional<LabelMatcher> LabelMatcher::parse(std::string_view text, std::string* error) {
  const std::string_view t = trim(text);
  std::size_t i = 0;
  while (i < t.size() && (std::isalnum(static_cast<unsigned char>(t[i])) || t[i] == '_')) ++i;
  const std::string name(t.substr(0, i));
  if (!valid_label_name(name)) {
    *error = "'" + std::string(t) + "': expected a label name, then =, !=, =~ or !~, then a value";
    return std::nullopt;
  }
  std::string_view rest = trim(t.substr(i));
  Op op;
  if (rest.starts_with("=~")) op = Op::regex, rest.remove_prefix(2);
  else if (rest.starts_with("!~")) op = Op::not_regex, rest.remove_prefix(2);
  else if (rest.starts_with("!=")) op = Op::not_equal, rest.remove_prefix(2);
  else if (rest.starts_with("=")) op = Op::equal, rest.remove_prefix(1);
  else {
    *error = "'" + std::string(t) + "': expected =, !=, =~ or !~ after the label name";
    return std::nullopt;
  }
  std::string why;
  auto value = unquote(trim(rest), &why);
  if (!value) {
    *error = "'" + std::string(t) + "': " + why;
    return std::nullopt;
  }
  try {
    return LabelMatcher(name, op, std::move(*value));
  } catch (const std::invalid_argument& e) {
    *error = "'" + std::string(t) + "': invalid regular expression: " + e.what();
    return std::nullopt;
  }
}

bool LabelMatcher::matches(const LabelSet& labels) const {
  static const std::string kMissing;
  auto it = labels.find(label_);
  const std::string& v = it == labels.end() ? kMissing : it->second;
  switch (op_) {
    case Op::equal: return v == value_;
    case Op::not_equal: return v != value_;
    case Op::regex: return regex_->matches(v);
    case Op::not_regex: return !regex_->matches(v);
  }
  return false;
}

std::string LabelMatcher::to_string() const {
  const char* op = op_ == Op::equal ? "=" : op_ == Op::not_equal ? "!=" : op_ == Op::regex ? "=~" : "!~";
  std::string quoted;
  for (char c : value_) {
    if (c == '"' || c == '\\') quoted.push_back('\\');
    quoted.push_back(c);
  }
  return label_ + op + "\"" + quoted + "\"";
}

}  // namespace mltap::reactions
