#include "bpf/src/proc.hpp"

#include <dirent.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

namespace mltap::bpf::proc {
namespace {

std::optional<std::string> slurp(const std::string& path, std::size_t max = 64 * 1024) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  std::string s(max, '\0');
  f.read(s.data(), static_cast<std::streamsize>(max));
  s.resize(static_cast<std::size_t>(f.gcount()));
  return s;
}

template <typename T>
bool parse_uint(std::string_view s, T& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

std::vector<ProcEntry> list_processes(const std::string& proc_root) {
  std::vector<ProcEntry> out;
  DIR* d = opendir(proc_root.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    std::uint32_t pid = 0;
    if (!parse_uint(std::string_view(e->d_name), pid) || pid == 0) continue;
    if (auto st = naming::read_proc_stat(pid, proc_root)) out.push_back({pid, std::move(*st)});
  }
  closedir(d);
  return out;
}

std::optional<std::string> read_link(const std::string& proc_root, std::uint32_t pid,
                                     const std::string& what) {
  const std::string p = proc_root + "/" + std::to_string(pid) + "/" + what;
  char buf[4096];
  const ssize_t n = ::readlink(p.c_str(), buf, sizeof(buf) - 1);
  if (n <= 0) return std::nullopt;
  return std::string(buf, static_cast<std::size_t>(n));
}

std::optional<std::uint64_t> read_cap_mask(const std::string& status_path, const std::string& key) {
  auto text = slurp(status_path, 16 * 1024);
  if (!text) return std::nullopt;
  std::istringstream in(*text);
  std::string line;
  const std::string prefix = key + ":";
  while (std::getline(in, line)) {
    if (line.compare(0, prefix.size(), prefix) != 0) continue;
    std::string_view v(line);
    v.remove_prefix(prefix.size());
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    std::uint64_t mask = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), mask, 16);
    if (ec != std::errc() || p != v.data() + v.size()) return std::nullopt;
    return mask;
  }
  return std::nullopt;
}

}  // namespace mltap::bpf::proc
