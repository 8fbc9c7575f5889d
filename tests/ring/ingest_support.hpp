// Helpers shared by the ring tests that run the ingest layer or real producer processes
// (discovery_test, trust_test, cleanup_test): one place, not a copy per file.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <string>

#include "agent/ingest/ingest.hpp"
#include "ring_fixture.hpp"

extern char** environ;

namespace mltap::test {

// An ingest of namespace `ns` in `dir`, refusing half-set-up rings at once (no pending grace).
inline ingest::IngestConfig config_for(const TempShmDir& dir, const std::string& ns) {
  ingest::IngestConfig c;
  c.ns = ns;
  c.shm_dir = dir.path();
  c.pending_grace = std::chrono::nanoseconds(0);
  return c;
}

// One lane of 64 KiB, one feature "x", every row kept.
inline StreamOptions one_lane(const TempShmDir& dir, const std::string& ns) {
  StreamOptions o;
  o.component = "test";
  o.shm_dir = dir.path();
  o.ns = ns;
  o.lanes = 1;
  o.ring_bytes = 64 << 10;
  o.sampling_budget = 0;
  o.features = {"x"};
  return o;
}

inline const core::StreamSnapshot* find_stream(const core::IngestSnapshot& s, const std::string& name) {
  for (const auto& st : s.streams) {
    if (st.info.name == name) return &st;
  }
  return nullptr;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

// A real producer process (ring_producer_helper, MLTAP_PRODUCER_HELPER) with one stream `stream`
// in `dir`/`ns`; `segment` is its ring, from its "ready <segment>" line (empty on failure).
struct Helper {
  pid_t pid = -1;
  std::string segment;
};

inline Helper start_helper(const std::string& dir, const std::string& ns, const std::string& stream) {
  int out[2];
  if (::pipe(out) != 0) return {};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  const char* argv[] = {MLTAP_PRODUCER_HELPER, dir.c_str(), ns.c_str(), stream.c_str(), nullptr};
  Helper h;
  if (posix_spawn(&h.pid, MLTAP_PRODUCER_HELPER, &fa, nullptr, const_cast<char**>(argv), environ) != 0) {
    h.pid = -1;
  }
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  std::string line;
  char ch;
  while (::read(out[0], &ch, 1) == 1 && ch != '\n') line += ch;
  ::close(out[0]);
  if (line.rfind("ready ", 0) == 0) h.segment = line.substr(6);
  return h;
}

}  // namespace mltap::test
