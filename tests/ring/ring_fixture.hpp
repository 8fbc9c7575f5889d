// Shared helpers for ring tests: a private shm directory per test, and a reader that collects
// what it reads.
#pragma once

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "agent/ingest/segment.hpp"
#include "mltap/stream.hpp"

namespace mltap::test {

// A fresh directory under /dev/shm (tmpfs, like production), removed with its files.
class TempShmDir {
 public:
  TempShmDir() {
    char tmpl[] = "/dev/shm/mltap-test-XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    path_ = d ? d : "";
  }
  ~TempShmDir() {
    if (DIR* dir = ::opendir(path_.c_str())) {
      while (dirent* de = ::readdir(dir)) {
        if (de->d_name[0] != '.') ::unlink((path_ + "/" + de->d_name).c_str());
      }
      ::closedir(dir);
    }
    ::rmdir(path_.c_str());
  }
  const std::string& path() const { return path_; }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    if (DIR* dir = ::opendir(path_.c_str())) {
      while (dirent* de = ::readdir(dir)) {
        if (de->d_name[0] != '.') out.push_back(path_ + "/" + de->d_name);
      }
      ::closedir(dir);
    }
    return out;
  }

 private:
  std::string path_;
};

struct CollectedRecord {
  std::uint64_t seq;
  std::uint32_t lane;
  std::uint32_t rows;
  format::DType dtype;
  std::vector<std::uint32_t> shape;
  std::vector<std::uint64_t> trace_ids;
  std::vector<std::uint8_t> payload;
};

class Collector : public ingest::RecordVisitor {
 public:
  void on_record(const ingest::RecordView& r) override {
    records.push_back({r.seq, r.lane, r.rows, r.dtype,
                       std::vector<std::uint32_t>(r.row_shape.begin(), r.row_shape.end()),
                       std::vector<std::uint64_t>(r.trace_ids.begin(), r.trace_ids.end()),
                       std::vector<std::uint8_t>(r.payload.begin(), r.payload.end())});
    rows += r.rows;
  }
  std::vector<CollectedRecord> records;
  std::uint64_t rows = 0;
};

inline StreamOptions small_options(const std::string& dir, std::uint32_t features = 4) {
  StreamOptions o;
  o.component = "test";
  o.shm_dir = dir;
  o.ns = "t";
  o.ring_bytes = 64 << 10;
  o.lanes = 4;
  o.sampling_budget = 0;
  for (std::uint32_t f = 0; f < features; ++f) o.features.push_back("f" + std::to_string(f));
  return o;
}

inline std::unique_ptr<ingest::SegmentReader> open_reader(const std::string& path) {
  ingest::RejectReason reason{};
  std::string detail;
  auto r = ingest::SegmentReader::open(path, ingest::ReaderLimits{}, reason, detail);
  EXPECT_TRUE(r) << "open " << path << ": " << ingest::reject_reason_name(reason) << ": " << detail;
  return r;
}

}  // namespace mltap::test
