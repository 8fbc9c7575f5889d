// The file_watch probe: fanotify with directory (inode) marks on the configured directories,
// reporting directory handle + name (FAN_REPORT_DFID_NAME). Chosen over syscall tracepoints
// because it costs nothing for files outside the watched directories and nothing per system
// call for other processes (docs/ebpf.md has the measurements). Events carry the actor's pid
// (tgid) when the group was created with CAP_SYS_ADMIN.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>

namespace mltap::bpf {

struct RawFileEvent {
  std::uint64_t mask = 0;   // FAN_CLOSE_WRITE, FAN_DELETE, FAN_RENAME, FAN_MOVED_FROM/TO
  std::uint32_t pid = 0;    // actor tgid; 0 if hidden (unprivileged group)
  std::string dir;          // watched directory the event is in ("" if not a watched one)
  std::string name;         // entry name (for FAN_RENAME: the old name)
  std::string new_dir;      // FAN_RENAME only
  std::string new_name;     // FAN_RENAME only
};

class FileWatch {
 public:
  FileWatch() = default;
  ~FileWatch();
  FileWatch(const FileWatch&) = delete;
  FileWatch& operator=(const FileWatch&) = delete;

  // fanotify_init; false with `error` set when the kernel or privileges do not allow it.
  bool open(std::string& error);
  bool is_open() const noexcept { return fd_ >= 0; }
  int fd() const noexcept { return fd_; }
  bool rename_events() const noexcept { return rename_events_.load(); }
  bool privileged() const noexcept { return privileged_; }

  // Marks `dir` (not recursive). Idempotent.
  bool add_dir(const std::string& dir, std::string& error);
  std::size_t dir_count() const;

  // Reads everything pending (non-blocking). Returns queue overflows seen (events lost).
  std::uint64_t drain(const std::function<void(const RawFileEvent&)>& on_event);
  // Parses one buffer of fanotify records (exposed for tests with crafted input).
  std::uint64_t parse(const char* buf, std::size_t len,
                      const std::function<void(const RawFileEvent&)>& on_event) const;

 private:
  std::string dir_of(const void* fid_info, std::size_t len) const;
  int fd_ = -1;
  std::atomic<bool> rename_events_{false};
  bool privileged_ = false;
  std::uint64_t mask_ = 0;
  mutable std::mutex mu_;                     // add_dir() may run on another thread
  std::map<std::string, std::string> dirs_;  // handle key -> directory path
};

}  // namespace mltap::bpf
