// Small readers of /proc (root injectable for tests). Everything read is checked: a missing
// process or a malformed file gives std::nullopt, never an exception.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mltap::bpf::proc {

struct ProcStat {
  std::string comm;
  char state = '?';
  std::uint32_t ppid = 0;
  std::uint64_t start_ticks = 0;  // field 22
};

// Parses the text of /proc/<pid>/stat ("pid (comm) S ppid ...").
std::optional<ProcStat> parse_stat(const std::string& text);
std::optional<ProcStat> read_stat(const std::string& proc_root, std::uint32_t pid);
// Every numeric entry of proc_root with its parsed stat (skips what vanished meanwhile).
struct ProcEntry {
  std::uint32_t pid = 0;
  ProcStat stat;
};
std::vector<ProcEntry> list_processes(const std::string& proc_root);
// readlink(proc_root/<pid>/<what>), e.g. "cwd" or "fd/3".
std::optional<std::string> read_link(const std::string& proc_root, std::uint32_t pid,
                                     const std::string& what);
// Capability sets of a thread ("CapEff", "CapPrm", ...) from .../status.
std::optional<std::uint64_t> read_cap_mask(const std::string& status_path, const std::string& key);

}  // namespace mltap::bpf::proc
