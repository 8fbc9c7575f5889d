// Append-only JSON-lines record of every reaction decision. Each record is one write(2) on an
// O_APPEND descriptor, so it reaches the kernel at once (no fsync: losing the last lines in a
// power cut is accepted). The file is rotated when it would exceed max_bytes:
// path -> path.1 -> ... -> path.<keep>.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace mltap::reactions {

class AuditLog {
 public:
  // Empty `path`: records are only logged through spdlog. Throws std::runtime_error when the
  // file cannot be opened.
  AuditLog(std::string path, std::uint64_t max_bytes, std::uint32_t keep);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Adds "time" (RFC 3339, UTC, ms) and writes one line. Thread-safe; never throws.
  void append(nlohmann::json record) noexcept;

  const std::string& path() const noexcept { return path_; }
  std::uint64_t write_errors() const noexcept { return write_errors_.load(); }
  std::uint64_t rotations() const noexcept { return rotations_.load(); }

 private:
  void open_locked();
  void rotate_locked();

  std::string path_;
  std::uint64_t max_bytes_;
  std::uint32_t keep_;
  std::mutex mu_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
  std::atomic<std::uint64_t> write_errors_{0};
  std::atomic<std::uint64_t> rotations_{0};
};

}  // namespace mltap::reactions
