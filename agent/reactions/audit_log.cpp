#include "agent/reactions/audit_log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "core/log.hpp"
#include <nlohmann/json.hpp>

#include "core/time.hpp"

namespace mltap::reactions {

AuditLog::AuditLog(std::string path, std::uint64_t max_bytes, std::uint32_t keep)
    : path_(std::move(path)), max_bytes_(max_bytes), keep_(keep) {
  if (path_.empty()) return;
  std::lock_guard lock(mu_);
  open_locked();
  if (fd_ < 0) {
    throw std::runtime_error("reaction audit log '" + path_ + "': " + std::strerror(errno));
  }
}

AuditLog::~AuditLog() {
  if (fd_ >= 0) ::close(fd_);
}

void AuditLog::open_locked() {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd_ < 0) return;
  struct stat st {};
  size_ = ::fstat(fd_, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
}

void AuditLog::rotate_locked() {
  ::close(fd_);
  fd_ = -1;
  if (keep_ == 0) {
    ::unlink(path_.c_str());
  } else {
    for (std::uint32_t i = keep_; i > 1; --i) {
      const std::string from = path_ + "." + std::to_string(i - 1);
      const std::string to = path_ + "." + std::to_string(i);
      ::rename(from.c_str(), to.c_str());  // missing older files are fine
    }
    ::rename(path_.c_str(), (path_ + ".1").c_str());
  }
  rotations_.fetch_add(1);
  open_locked();
}

void AuditLog::append(nlohmann::json record) noexcept {
  try {
    record["time"] = core::format_utc(core::unix_now_ns());
    // Exec output may not be UTF-8: replace bad bytes rather than failing the record.
    std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    line.push_back('\n');
    if (path_.empty()) {
      core::log::info("reaction audit: {}", line.substr(0, line.size() - 1));
      return;
    }
    std::lock_guard lock(mu_);
    if (fd_ >= 0 && size_ > 0 && size_ + line.size() > max_bytes_) rotate_locked();
    if (fd_ < 0) open_locked();
    if (fd_ < 0) {
      write_errors_.fetch_add(1);
      core::log::error("reaction audit log '{}': cannot open: {}", path_, std::strerror(errno));
      return;
    }
    const ssize_t n = ::write(fd_, line.data(), line.size());
    if (n != static_cast<ssize_t>(line.size())) {
      write_errors_.fetch_add(1);
      core::log::error("reaction audit log '{}': short write: {}", path_,
                    n < 0 ? std::strerror(errno) : "partial");
    }
    if (n > 0) size_ += static_cast<std::uint64_t>(n);
  } catch (const std::exception& e) {
    write_errors_.fetch_add(1);
    core::log::error("reaction audit log '{}': {}", path_, e.what());
  }
}

}  // namespace mltap::reactions
