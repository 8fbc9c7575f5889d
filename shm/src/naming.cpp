#include "mltap/naming.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace mltap::naming {

bool valid_namespace(std::string_view ns) noexcept {
  if (ns.empty() || ns.size() > 31) return false;
  for (char c : ns) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool valid_label_text(std::string_view text, std::size_t max) noexcept {
  if (text.empty() || text.size() > max) return false;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u > 0x7e || c == '"' || c == '\\') return false;
  }
  return true;
}

bool valid_stream_name(std::string_view name) noexcept {
  if (!valid_label_text(name, 127)) return false;
  for (char c : name) {
    if (c == ' ' || c == '\'' || c == '`') return false;
  }
  return true;
}

bool valid_component(std::string_view name) noexcept {
  return name.size() <= 63 && valid_stream_name(name);
}

bool valid_artifact_path(std::string_view path) noexcept {
  if (path.size() < 2 || path.size() >= 1024 || path[0] != '/') return false;
  for (char c : path) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u > 0x7e) return false;
  }
  std::size_t start = 1;
  while (start <= path.size()) {
    const auto end = std::min(path.find('/', start), path.size());
    const std::string_view part = path.substr(start, end - start);
    if (part == "." || part == ".." || (part.empty() && end != path.size())) return false;
    start = end + 1;
  }
  return true;
}

std::string segment_prefix(std::string_view ns) {
  std::string s = "mltap.";
  s += ns;
  s += '.';
  return s;
}

std::string segment_file_name(std::string_view ns, std::uint32_t pid, std::uint64_t n) {
  return segment_prefix(ns) + std::to_string(pid) + "." + std::to_string(n);
}

std::string agent_presence_file_name(std::string_view ns) { return segment_prefix(ns) + "agent"; }

bool is_segment_file_name(std::string_view ns, std::string_view name) noexcept {
  const std::string prefix = segment_prefix(ns);
  if (name.size() <= prefix.size() || name.substr(0, prefix.size()) != prefix) return false;
  const std::string_view rest = name.substr(prefix.size());
  const auto dot = rest.find('.');
  if (dot == 0 || dot == std::string_view::npos || dot + 1 == rest.size()) return false;
  for (std::size_t i = 0; i < rest.size(); ++i) {
    if (i == dot) continue;
    if (rest[i] < '0' || rest[i] > '9') return false;
  }
  return rest.size() <= 40;
}

std::string namespace_from_env() {
  const char* v = std::getenv("MLTAP_NAMESPACE");
  if (v && valid_namespace(v)) return v;
  if (v && *v) {
    std::fprintf(stderr, "mltap: MLTAP_NAMESPACE='%s' is not [a-z0-9_-]{1,31}; using '%s'\n", v,
                 std::string(kDefaultNamespace).c_str());
  }
  return std::string(kDefaultNamespace);
}

std::string shm_dir_from_env() {
  const char* v = std::getenv("MLTAP_SHM_DIR");
  if (v && *v == '/') return v;
  return std::string(kDefaultShmDir);
}

std::optional<std::uint64_t> process_start_ticks(std::uint32_t pid, const std::string& proc_root) {
  if (pid == 0) return std::nullopt;
  std::ifstream in(proc_root + "/" + std::to_string(pid) + "/stat");
  if (!in) return std::nullopt;
  std::string line;
  std::getline(in, line);
  // comm (field 2) may hold spaces and parentheses: fields resume after the LAST ')'.
  const auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 1));
  std::string field;
  // After ')' come fields 3..; start time is field 22 -> the 20th token.
  for (int i = 3; i <= 22; ++i) {
    if (!(rest >> field)) return std::nullopt;
  }
  try {
    size_t used = 0;
    const unsigned long long v = std::stoull(field, &used);
    if (used != field.size()) return std::nullopt;
    return v;
  } catch (...) {
    return std::nullopt;
  }
}

std::uint64_t pid_namespace_inode(const std::string& proc_root, std::string_view pid) {
  struct stat st {};
  const std::string p = proc_root + "/" + std::string(pid) + "/ns/pid";
  if (::stat(p.c_str(), &st) != 0) return 0;
  return st.st_ino;
}

}  // namespace mltap::naming
