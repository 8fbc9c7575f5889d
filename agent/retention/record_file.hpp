// Append-only files of checked frames: what the retained samples and the flags are kept in.
// A frame is a 16-byte header (magic, type, payload length, CRC-32 of the payload) and its
// payload. A write is one write(2) of the whole frame, so kill -9 of mltapd leaves at most one
// torn frame at the end of a file: replay() stops at the first frame that is short, has a bad
// magic, an implausible length or a bad CRC, and cuts the file there (the torn tail is ignored
// and later appends start on a frame boundary).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>

namespace mltap::retention {

inline constexpr std::uint32_t kFrameMagic = 0x5452544D;  // "MTRT" little-endian
inline constexpr std::size_t kFrameHeaderBytes = 16;
inline constexpr std::uint32_t kMaxFramePayload = 1u << 24;

enum class FrameType : std::uint16_t { meta = 1, row = 2, flag = 3 };

// An O_APPEND file descriptor, closed on destruction.
class AppendFile {
 public:
  AppendFile() = default;
  ~AppendFile();
  AppendFile(AppendFile&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)) { o.fd_ = -1; }
  AppendFile& operator=(AppendFile&& o) noexcept;
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;

  // Opens (creating it 0600) `path` for appending; false with errno set on failure.
  bool open(const std::string& path);
  bool is_open() const noexcept { return fd_ >= 0; }
  const std::string& path() const noexcept { return path_; }
  void close() noexcept;
  // Appends one frame in one write; false (errno set) when it could not be written whole (a
  // short write is cut off again so that the file ends on a frame boundary).
  bool append(FrameType type, std::span<const std::byte> payload);

 private:
  int fd_ = -1;
  std::string path_;
};

struct ReplayResult {
  bool opened = false;
  std::uint64_t good_bytes = 0;  // the file's length after the cut
  std::uint64_t torn_bytes = 0;  // what was cut off
  std::uint64_t frames = 0;
  bool cut_failed = false;  // a torn tail that could not be cut: the file must not be appended to
};

// Reads every good frame of `path` in order, calling `on_frame` for each; `on_frame` returning
// false treats that frame as corrupt (the file is cut before it). Cuts a torn or corrupt tail.
ReplayResult replay(const std::string& path,
                    const std::function<bool(FrameType, std::span<const std::byte>)>& on_frame);

// Bytes a frame with `payload_bytes` of payload takes in its file.
constexpr std::uint64_t frame_bytes(std::uint64_t payload_bytes) noexcept {
  return kFrameHeaderBytes + payload_bytes;
}

}  // namespace mltap::retention
