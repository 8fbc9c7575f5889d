// Helpers shared by the ring benchmarks: a private namespace and shm directory per process, so
// that benchmarks never see (or are seen by) a real mltapd or another run, and leave nothing behind.
#pragma once

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "mltap/stream.hpp"

namespace mltap::bench {

// A mkdtemp directory under /dev/shm (or $MLTAP_BENCH_SHM_BASE), emptied and removed at exit.
class TempShmDir {
 public:
  TempShmDir() {
    const char* base = std::getenv("MLTAP_BENCH_SHM_BASE");
    std::string tmpl = std::string(base && *base ? base : "/dev/shm") + "/mltap-bench.XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      throw std::runtime_error("cannot create a temporary directory from " + tmpl);
    }
    path_ = tmpl;
  }
  ~TempShmDir() { remove_all(); }
  TempShmDir(const TempShmDir&) = delete;
  TempShmDir& operator=(const TempShmDir&) = delete;

  const std::string& path() const noexcept { return path_; }

  // Removes every file in the directory, then the directory (it holds no subdirectories).
  void remove_all() noexcept {
    if (path_.empty()) return;
    if (DIR* d = ::opendir(path_.c_str())) {
      while (dirent* e = ::readdir(d)) {
        const std::string name = e->d_name;
        if (name == "." || name == "..") continue;
        ::unlink((path_ + "/" + name).c_str());
      }
      ::closedir(d);
    }
    ::rmdir(path_.c_str());
    path_.clear();
  }

 private:
  std::string path_;
};

// A namespace no other process uses: "bench-<pid>".
inline std::string unique_namespace() { return "bench-" + std::to_string(::getpid()); }

// "f<i>". Appended rather than `"f" + std::to_string(i)`, which trips g++ 12's -O3 -Wrestrict
// false positive (GCC PR 105329).
inline std::string feature_name(std::size_t i) {
  std::string s = std::to_string(i);
  s.insert(s.begin(), 'f');
  return s;
}

inline StreamOptions row_stream_options(const TempShmDir& dir, std::size_t features) {
  StreamOptions o;
  o.component = "bench";
  o.ns = unique_namespace();
  o.shm_dir = dir.path();
  o.sampling_budget = 0;  // keep every row: the full write path is what is measured
  for (std::size_t i = 0; i < features; ++i) o.features.push_back(feature_name(i));
  o.dtype = DType::float32;
  return o;
}

}  // namespace mltap::bench
