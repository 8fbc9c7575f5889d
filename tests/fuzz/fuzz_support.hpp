// Helpers shared by the fuzz targets (tests/fuzz/README.md). Each target defines
// LLVMFuzzerTestOneInput (and optionally LLVMFuzzerInitialize); it is linked either with libFuzzer
// (clang, MLTAP_FUZZ=ON) or with replay_main.cpp, which runs the corpus files through it once.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

// A property the target asserts: a violation is a finding, reported like a crash (abort) so that
// libFuzzer keeps the input and the replay test fails.
#define FUZZ_CHECK(cond, ...)                                                        \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "fuzz check failed at %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                             \
      std::fputc('\n', stderr);                                                      \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)

namespace mltap::fuzz {

// A private directory under /dev/shm (tmpfs, where rings live), made once per process and left
// for the OS to clean only if the process is killed: removed at exit otherwise.
class TempDir {
 public:
  explicit TempDir(const char* tag) {
    std::string tmpl = std::string("/dev/shm/mltap-fuzz-") + tag + "-XXXXXX";
    if (!::mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    path_ = tmpl;
  }
  ~TempDir() {
    std::string cmd = "rm -rf '" + path_ + "'";
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", path_.c_str());
  }
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

// Reads the fuzzer's bytes as a stream of small decisions; past the end every read is 0.
class Bytes {
 public:
  Bytes(const std::uint8_t* data, std::size_t size) : p_(data), n_(size) {}
  bool empty() const noexcept { return i_ >= n_; }
  std::size_t left() const noexcept { return i_ < n_ ? n_ - i_ : 0; }
  std::uint8_t u8() noexcept { return i_ < n_ ? p_[i_++] : 0; }
  std::uint16_t u16() noexcept { return static_cast<std::uint16_t>(u8() | (u8() << 8)); }
  std::uint32_t u32() noexcept { return u16() | (static_cast<std::uint32_t>(u16()) << 16); }
  std::uint64_t u64() noexcept { return u32() | (static_cast<std::uint64_t>(u32()) << 32); }
  // Up to `max` bytes (fewer at the end).
  std::string_view take(std::size_t max) noexcept {
    const std::size_t k = std::min(max, left());
    std::string_view s(reinterpret_cast<const char*>(p_ + i_), k);
    i_ += k;
    return s;
  }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
  std::size_t i_ = 0;
};

}  // namespace mltap::fuzz
