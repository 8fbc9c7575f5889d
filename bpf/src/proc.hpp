// Small readers of /proc (root injectable for tests). Everything read is checked: a missing
// process or a malformed file gives std::nullopt, never an exception.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "mltap/naming.hpp"

namespace mltap::bpf::proc {

// /proc/<pid>/stat itself is read by naming::read_proc_stat (the one parser of it).
// Every numeric entry of proc_root with its parsed stat (skips what vanished meanwhile).
struct ProcEntry {
  std::uint32_t pid = 0;
  naming::ProcStat stat;
};
std::vector<ProcEntry> list_processes(const std::string& proc_root);
// readlink(proc_root/<pid>/<what>), e.g. "cwd" or "fd/3".
std::optional<std::string> read_link(const std::string& proc_root, std::uint32_t pid,
                                     const std::string& what);
// Capability sets of a thread ("CapEff", "CapPrm", ...) from .../status.
std::optional<std::uint64_t> read_cap_mask(const std::string& status_path, const std::string& key);

}  // namespace mltap::bpf::proc
