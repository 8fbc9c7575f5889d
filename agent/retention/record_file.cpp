#include "agent/retention/record_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace mltap::retention {
namespace {

std::uint32_t crc_of(std::span<const std::byte> p) noexcept {
  return static_cast<std::uint32_t>(
      ::crc32(0L, reinterpret_cast<const Bytef*>(p.data()), static_cast<uInt>(p.size())));
}

struct Header {
  std::uint32_t magic;
  std::uint16_t type;
  std::uint16_t reserved;
  std::uint32_t length;
  std::uint32_t crc;
};
static_assert(sizeof(Header) == kFrameHeaderBytes);

}  // namespace

AppendFile::~AppendFile() { close(); }

AppendFile& AppendFile::operator=(AppendFile&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    o.fd_ = -1;
  }
  return *this;
}

bool AppendFile::open(const std::string& path) {
  close();
  fd_ = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd_ < 0) return false;
  path_ = path;
  return true;
}

void AppendFile::close() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool AppendFile::append(FrameType type, std::span<const std::byte> payload) {
  if (fd_ < 0 || payload.size() > kMaxFramePayload) {
    errno = fd_ < 0 ? EBADF : EMSGSIZE;
    return false;
  }
  std::vector<std::byte> frame(kFrameHeaderBytes + payload.size());
  const Header h{kFrameMagic, static_cast<std::uint16_t>(type), 0,
                 static_cast<std::uint32_t>(payload.size()), crc_of(payload)};
  std::memcpy(frame.data(), &h, sizeof h);
  if (!payload.empty()) std::memcpy(frame.data() + sizeof h, payload.data(), payload.size());
  struct stat st {};
  const bool sized = ::fstat(fd_, &st) == 0;
  const ssize_t n = ::write(fd_, frame.data(), frame.size());
  if (n == static_cast<ssize_t>(frame.size())) return true;
  const int saved = n < 0 ? errno : ENOSPC;
  // A partial frame (full disk) would make every later frame unreadable: cut it off.
  if (n > 0 && sized && ::ftruncate(fd_, st.st_size) != 0) {
    // Left torn: the next replay cuts it and everything appended after it.
  }
  errno = saved;
  return false;
}

ReplayResult replay(const std::string& path,
                    const std::function<bool(FrameType, std::span<const std::byte>)>& on_frame) {
  ReplayResult r;
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  // A read-only file system (or file): still read what it holds; a torn tail then cannot be cut.
  if (fd < 0 && (errno == EROFS || errno == EACCES))
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return r;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return r;
  }
  r.opened = true;
  const auto size = static_cast<std::uint64_t>(st.st_size);
  std::vector<std::byte> data(size);
  std::uint64_t got = 0;
  while (got < size) {
    const ssize_t n = ::pread(fd, data.data() + got, size - got, static_cast<off_t>(got));
    if (n <= 0) break;
    got += static_cast<std::uint64_t>(n);
  }
  std::uint64_t off = 0;
  while (off + kFrameHeaderBytes <= got) {
    Header h{};
    std::memcpy(&h, data.data() + off, sizeof h);
    if (h.magic != kFrameMagic || h.length > kMaxFramePayload ||
        off + kFrameHeaderBytes + h.length > got)
      break;
    const std::span<const std::byte> payload(data.data() + off + kFrameHeaderBytes, h.length);
    if (crc_of(payload) != h.crc) break;
    if (!on_frame(static_cast<FrameType>(h.type), payload)) break;
    off += kFrameHeaderBytes + h.length;
    ++r.frames;
  }
  r.good_bytes = off;
  r.torn_bytes = size - off;
  if (r.torn_bytes > 0 && ::ftruncate(fd, static_cast<off_t>(off)) != 0) {
    r.cut_failed = true;  // appending after the torn tail would hide every later frame
  }
  ::close(fd);
  return r;
}

}  // namespace mltap::retention
