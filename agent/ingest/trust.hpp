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
#include <vector>

#include "core/batch.hpp"

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

// A file descriptor owned by one object (the pidfd of a verified producer).
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  ~UniqueFd();
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  int release() noexcept {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

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

// Checks the producer `id` claims against the kernel. `agent_pid_ns` is the agent's pid namespace
// inode; `proc_dir` the procfs root (always "/proc" in production; tests may not change it for
// the pidfd, which is always the real process of that pid).
Verification verify_producer(const FileFacts& file, const core::SegmentIdentity& id,
                             std::uint64_t agent_pid_ns, const std::string& proc_dir);

// Whether /proc/<pid>/maps (the text) maps the file with device `dev` and inode `ino`. The
// device is printed as hex major:minor, the inode in decimal (fs/proc/task_mmu.c).
bool maps_text_maps_inode(std::string_view maps, std::uint64_t dev, std::uint64_t ino);

// Whether a process with these credentials may list and search the directory `dir` (every
// component searchable, the directory itself readable), by owner/group/other mode bits. ACLs are
// not consulted: a grant through an ACL alone is not honoured (refused, never wrongly allowed
// by the mask, since the group bits of a file with an ACL are the mask).
bool credentials_can_read_dir(const ProcessCredentials& who, const std::string& dir);

// Whether `path` (absolute, normalised) is `dir` or lies below it, by whole components.
bool path_is_under(const std::string& path, const std::string& dir);

}  // namespace mltap::ingest
