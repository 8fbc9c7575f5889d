#include "mltap/naming.hpp"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <vector>

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

std::string shm_dir_from_env() {
  const char* v = std::getenv("MLTAP_SHM_DIR");
  if (v && *v == '/') return v;
  return std::string(kDefaultShmDir);
}

namespace {

template <typename T>
bool parse_uint(std::string_view s, T& out) {
  if (s.empty()) return false;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

std::optional<ProcStat> parse_proc_stat(std::string_view text) {
  const auto open = text.find('(');
  const auto close = text.rfind(')');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open) {
    return std::nullopt;
  }
  ProcStat st;
  st.comm = std::string(text.substr(open + 1, close - open - 1));
  std::vector<std::string_view> fields;  // fields 3.. of proc_pid_stat(5)
  std::string_view rest = text.substr(close + 1);
  std::size_t i = 0;
  while (i < rest.size() && fields.size() < 24) {
    while (i < rest.size() && (rest[i] == ' ' || rest[i] == '\n')) ++i;
    const std::size_t b = i;
    while (i < rest.size() && rest[i] != ' ' && rest[i] != '\n') ++i;
    if (i > b) fields.push_back(rest.substr(b, i - b));
  }
  if (fields.size() < 20 || fields[0].size() != 1) return std::nullopt;
  st.state = fields[0][0];
  if (!parse_uint(fields[1], st.ppid)) return std::nullopt;
  if (!parse_uint(fields[19], st.start_ticks)) return std::nullopt;  // field 22
  return st;
}

std::optional<ProcStat> read_proc_stat(std::uint32_t pid, const std::string& proc_root) {
  if (pid == 0) return std::nullopt;
  // open/read into a stack buffer: the agent reads this per producer and scan, and an ifstream's
  // construction alone (locale, buffers) cost more than the kernel's read of the file.
  char path[PATH_MAX];
  const int len = std::snprintf(path, sizeof path, "%s/%u/stat", proc_root.c_str(), pid);
  if (len <= 0 || static_cast<std::size_t>(len) >= sizeof path) return std::nullopt;
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char text[4096];  // the line is far shorter; a longer file is not a stat file
  std::size_t got = 0;
  while (got < sizeof text) {
    const ssize_t n = ::read(fd, text + got, sizeof text - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return parse_proc_stat(std::string_view(text, got));
}

std::optional<std::uint64_t> process_start_ticks(std::uint32_t pid, const std::string& proc_root) {
  const auto st = read_proc_stat(pid, proc_root);
  if (!st) return std::nullopt;
  return st->start_ticks;
}

std::uint64_t pid_namespace_inode(const std::string& proc_root, std::string_view pid) {
  struct stat st {};
  const std::string p = proc_root + "/" + std::string(pid) + "/ns/pid";
  if (::stat(p.c_str(), &st) != 0) return 0;
  return st.st_ino;
}

}  // namespace mltap::naming
