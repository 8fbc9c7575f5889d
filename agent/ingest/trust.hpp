// The producer trust check (docs/security.md). A segment's header only *claims* a producer (pid,
// start time, uid); the kernel has to vouch for the claim before the agent reads the ring, writes
// its control page, traces the process or signals it:
//   - the segment file's owner (fstat on the fd the agent opened) is the real uid of the named
//     process (/proc/<pid>/status) and the uid the header names;
//   - that process started when the header says (/proc/<pid>/stat), so the pid is not a reused one;
//   - that process maps this very inode (/proc/<pid>/maps: device and inode of the file);
//   - a pidfd taken afterwards refers to the same process (start time re-checked after taking it):
//     from then on signals go through the pidfd, never through the pid.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/batch.hpp"
#include "core/unique_fd.hpp"

namespace mltap::ingest {

// Why a segment was refused by the trust check (metric label `cause`, bounded).
enum class TrustFailure {
  none,
  foreign_pid_ns,   // the producer's pid namespace is not the agent's: its pid means nothing here
  process_gone,     // no process with that pid and start time (dead, reused pid, forged times)
  owner_mismatch,   // file owner, header uid and the process's real uid disagree
  not_mapped,       // the named process does not map this file
  proc_unreadable,  // /proc/<pid>/maps could not be read (no CAP_SYS_PTRACE for another uid?)
  pidfd_failed,     // pidfd_open failed for another reason than the process having exited
  stream_owner,     // verified, but the stream belongs to another uid
};
constexpr std::string_view trust_failure_name(TrustFailure f) noexcept {
  switch (f) {
    case TrustFailure::none: return "none";
    case TrustFailure::foreign_pid_ns: return "foreign_pid_ns";
    case TrustFailure::process_gone: return "process_gone";
    case TrustFailure::owner_mismatch: return "owner_mismatch";
    case TrustFailure::not_mapped: return "not_mapped";
    case TrustFailure::proc_unreadable: return "proc_unreadable";
    case TrustFailure::pidfd_failed: return "pidfd_failed";
    case TrustFailure::stream_owner: return "stream_owner";
  }
  return "unknown";
}
// Causes that may go away by themselves (retried with backoff); the others stay until the file
// changes.
constexpr bool trust_failure_transient(TrustFailure f) noexcept {
  return f == TrustFailure::not_mapped || f == TrustFailure::proc_unreadable ||
         f == TrustFailure::pidfd_failed;
}

using core::UniqueFd;  // the pidfd of a verified producer

// What fstat on the agent's own descriptor said about the segment file.
struct FileFacts {
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  std::uint32_t uid = 0;
};

// The credentials of a verified producer process (/proc/<pid>/status).
struct ProcessCredentials {
  std::uint32_t uid = 0;  // real
  std::uint32_t gid = 0;  // real
  std::vector<std::uint32_t> groups;
};

struct Verification {
  TrustFailure failure = TrustFailure::none;
  std::string detail;  // for the log: what did not match
  UniqueFd pidfd;      // valid when failure == none
  ProcessCredentials credentials;
  bool ok() const noexcept { return failure == TrustFailure::none; }
};

// A pidfd of the process `pid` that started at `start_ticks`: the start time is read again with
// the pidfd held, so a pid reused meanwhile is never taken. `v.pidfd` is valid on success; on
// failure `v.failure` (process_gone or pidfd_failed) and `v.detail` say why.
void take_pidfd(std::uint32_t pid, std::uint64_t start_ticks, const std::string& proc_dir,
                Verification& v);

// The inodes each producer process maps, from one read of /proc/<pid>/maps, reused for the
// other segments of that process verified in the same scan (a process with N segments has N
// mappings: a fresh read per segment made attaching them O(N^2), 5,000 segments of one process
// took minutes). Keyed by (pid, start time), so a reused pid never sees another process's parse.
// Cleared by the caller after each scan; never older than that.
//
// Why a reused parse still proves what a fresh read proves (docs/security.md, "The check at
// attach"):
//   - a parse read *after* the agent opened the file answers both ways exactly as a fresh read
//     would: this is checked (`opened_ns`), and a parse older than the file's opening whose
//     answer is "not mapped" is never trusted: the maps are read again;
//   - a parse older than the opening that *does* list the file's (device, inode) is trusted. The
//     agent holds the file open, so its inode number is this file's; it could have named another
//     file at the time of the parse only if that file was removed and its number reused in
//     between, within one scan. tmpfs (/dev/shm) never reuses inode numbers (a per-mount
//     counter); and the owner check before it is always fresh (fstat, /proc/<pid>/status), so
//     such a file would belong to the producer's own uid anyway: a forger of another uid never
//     gets that far, and one of the same uid could make the process map the file itself.
class MapsCache {
 public:
  enum class Answer { mapped, not_mapped, gone, unreadable };
  // Whether process `pid` (started at `start_ticks`) maps (dev, ino); `opened_ns` is when the
  // agent opened the file (CLOCK_MONOTONIC ns). `error` is errno for `unreadable`.
  Answer maps(std::uint32_t pid, std::uint64_t start_ticks, std::uint64_t dev, std::uint64_t ino,
              std::uint64_t opened_ns, const std::string& proc_dir, int& error);
  void clear() noexcept { by_process_.clear(); }
  std::uint64_t reads() const noexcept { return reads_; }  // /proc/<pid>/maps reads so far

 private:
  struct Parse {
    std::uint64_t read_ns = 0;  // CLOCK_MONOTONIC, taken before the read
    std::vector<std::pair<std::uint64_t, std::uint64_t>> inodes;  // (dev, ino), sorted
  };
  std::vector<std::pair<std::pair<std::uint32_t, std::uint64_t>, Parse>> by_process_;
  std::uint64_t reads_ = 0;
};

// CLOCK_MONOTONIC in ns (MapsCache's clock).
std::uint64_t monotonic_ns() noexcept;

// Checks the producer `id` claims against the kernel. `agent_pid_ns` is the agent's pid namespace
// inode; `proc_dir` the procfs root (always "/proc" in production; tests may not change it for
// the pidfd, which is always the real process of that pid). With `maps`, the maps check goes
// through that cache (`opened_ns`: when the file was opened, see MapsCache); without, it reads
// /proc/<pid>/maps afresh.
Verification verify_producer(const FileFacts& file, const core::SegmentIdentity& id,
                             std::uint64_t agent_pid_ns, const std::string& proc_dir,
                             MapsCache* maps = nullptr, std::uint64_t opened_ns = 0);

// Whether /proc/<pid>/maps (the text) maps the file with device `dev` and inode `ino`. The
// device is printed as hex major:minor, the inode in decimal (fs/proc/task_mmu.c).
bool maps_text_maps_inode(std::string_view maps, std::uint64_t dev, std::uint64_t ino);
// Every (device, inode) mapped in /proc/<pid>/maps text (inode 0, anonymous memory, left out),
// sorted and unique.
std::vector<std::pair<std::uint64_t, std::uint64_t>> maps_text_inodes(std::string_view maps);

// Whether a process with these credentials may list and search the directory `dir` (every
// component searchable, the directory itself readable), by owner/group/other mode bits. ACLs are
// not consulted: a grant through an ACL alone is not honoured (refused, never wrongly allowed
// by the mask, since the group bits of a file with an ACL are the mask).
bool credentials_can_read_dir(const ProcessCredentials& who, const std::string& dir);

// Whether `path` (absolute, normalised) is `dir` or lies below it, by whole components.
bool path_is_under(const std::string& path, const std::string& dir);

}  // namespace mltap::ingest
