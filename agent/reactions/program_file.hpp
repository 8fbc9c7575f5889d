// The program of an exec reaction, opened once and checked: it runs as mltapd (uid 0), so whoever
// can replace it or any folder above it could run code as root (audit 2026-12-01, item 9).
//
// The rule: the file and every directory from / down to it are owned by root or by mltapd's own
// uid and are not writable by group or others. One exception: a directory with the sticky bit
// (/tmp) may be world-writable, because there others cannot rename or remove entries they do not
// own; the entry below it must still pass the owner check. Symbolic links are resolved first
// (realpath) and the resolved path is walked component by component with O_NOFOLLOW from a
// descriptor of the previous directory, so no component is looked up twice.
//
// The program is executed through the descriptor taken at load (/proc/self/fd/N, which the kernel
// resolves to the opened inode, not by name), and before each run the path is checked again and
// must still name that very inode: a program swapped or made writable after load is refused.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <utility>

#include "core/unique_fd.hpp"

namespace mltap::reactions {

class ProgramFile {
 public:
  // Opens and checks `path` (absolute). On failure returns nullptr and sets `error` to a message
  // naming the offending path and its owner/mode. `agent_uid` is the uid mltapd runs as.
  static std::shared_ptr<const ProgramFile> open(const std::string& path, uid_t agent_uid, std::string* error);

  ProgramFile(const ProgramFile&) = delete;
  ProgramFile& operator=(const ProgramFile&) = delete;

  // The run-time check: the path passes the rule again and still names the inode opened at load,
  // and that inode still passes the file rule. Empty when fine, else why not.
  std::string recheck() const;

  int fd() const noexcept { return fd_.get(); }  // O_PATH|O_CLOEXEC
  const std::string& path() const noexcept { return path_; }

 private:
  ProgramFile(std::string path, uid_t agent_uid, core::UniqueFd fd, dev_t dev, ino_t ino) noexcept
      : path_(std::move(path)), agent_uid_(agent_uid), fd_(std::move(fd)), dev_(dev), ino_(ino) {}

  std::string path_;
  uid_t agent_uid_;
  core::UniqueFd fd_;
  dev_t dev_;
  ino_t ino_;
};

}  // namespace mltap::reactions
