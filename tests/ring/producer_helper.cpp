// A producer process for the ring tests: opens a stream, writes one row, says "ready <segment>"
// on stdout and waits to be killed.
//   ring_producer_helper <shm_dir> <namespace> <stream>
#include <unistd.h>

#include <cstdio>
#include <span>

#include "mltap/stream.hpp"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s <shm_dir> <namespace> <stream>\n", argv[0]);
    return 2;
  }
  mltap::StreamOptions o;
  o.component = "helper";
  o.shm_dir = argv[1];
  o.ns = argv[2];
  o.lanes = 1;
  o.ring_bytes = 64 << 10;
  o.features = {"x"};
  mltap::Stream s(argv[3], o);
  const float v[1] = {1};
  s.write(std::span<const float>(v));
  std::printf("ready %s\n", s.segment_path().c_str());
  std::fflush(stdout);
  for (;;) ::pause();
}
