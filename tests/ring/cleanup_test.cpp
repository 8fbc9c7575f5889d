// Segments of producers that died (SIGKILL) while no agent ran: the next stream that opens in the
// namespace while no agent runs removes them, and only them: never another user's file, never a
// symlink, never a live producer's segment, never one whose liveness it cannot judge.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>

#include "mltap/naming.hpp"
#include "ingest_support.hpp"

namespace mltap::test {
namespace {

std::size_t count_segments(const TempShmDir& dir, const std::string& ns) {
  std::size_t n = 0;
  for (const auto& f : dir.files()) {
    n += naming::is_segment_file_name(ns, f.substr(f.rfind('/') + 1)) ? 1 : 0;
  }
  return n;
}

format::SegmentHeader& header_of(std::string& bytes) {
  return *reinterpret_cast<format::SegmentHeader*>(bytes.data());
}

TEST(DeadProducers, TheNextStreamWithoutAnAgentRemovesWhatSigkilledProducersLeft) {
  TempShmDir dir;
  const std::string ns = "gc";
  constexpr int kProducers = 100;
  std::vector<Helper> helpers;
  for (int i = 0; i < kProducers; ++i) {
    helpers.push_back(start_helper(dir.path(), ns, "t/dead" + std::to_string(i)));
    ASSERT_GT(helpers.back().pid, 0);
    ASSERT_FALSE(helpers.back().segment.empty()) << "helper " << i << " has no ring";
  }
  // One more stays alive: its segment must stay.
  Helper alive = start_helper(dir.path(), ns, "t/dead" + std::to_string(kProducers));
  ASSERT_FALSE(alive.segment.empty());
  for (const auto& h : helpers) ::kill(h.pid, SIGKILL);
  for (const auto& h : helpers) ::waitpid(h.pid, nullptr, 0);

  // Files a stream must not remove, made from a dead producer's segment.
  const std::string dead = read_file(helpers[0].segment);
  const std::uint32_t dead_pid = static_cast<std::uint32_t>(helpers[0].pid);
  auto named = [&](int n) {
    return dir.path() + "/" + naming::segment_file_name(ns, dead_pid, 900 + static_cast<std::uint64_t>(n));
  };
  std::vector<std::string> must_stay;
  {
    std::string other_ns = dead;  // a producer of another pid namespace: liveness unknown
    header_of(other_ns).pid_ns_inode ^= 1;
    write_file(named(1), other_ns);
    must_stay.push_back(named(1));
    std::string half = dead;  // half-created (no magic yet)
    header_of(half).magic = 0;
    write_file(named(2), half);
    must_stay.push_back(named(2));
    // A symlink named like a segment, to a dead segment elsewhere: neither is touched.
    const std::string target = dir.path() + "/elsewhere";
    write_file(target, dead);
    ASSERT_EQ(::symlink(target.c_str(), named(3).c_str()), 0);
    must_stay.push_back(named(3));
    must_stay.push_back(target);
    if (::geteuid() == 0) {  // another user's dead segment
      write_file(named(4), dead);
      ASSERT_EQ(::chown(named(4).c_str(), 65534, 65534), 0);
      must_stay.push_back(named(4));
    }
  }
  // A closed segment of a live process (this one) goes: nobody drains it without an agent.
  std::string closed = dead;
  header_of(closed).state = static_cast<std::uint32_t>(format::SegmentState::closed);
  header_of(closed).producer_pid = static_cast<std::uint32_t>(::getpid());
  header_of(closed).producer_start_ticks = naming::process_start_ticks(::getpid()).value_or(0);
  const std::string closed_path =
      dir.path() + "/" + naming::segment_file_name(ns, static_cast<std::uint32_t>(::getpid()), 999);
  write_file(closed_path, closed);

  const std::size_t before = count_segments(dir, ns);
  EXPECT_EQ(before, kProducers + 1u + must_stay.size() - 1 /* "elsewhere" */ + 1 /* closed */);
  auto o = small_options(dir.path());
  o.ns = ns;
  const auto t0 = std::chrono::steady_clock::now();
  Stream next("t/next", o);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const std::size_t after = count_segments(dir, ns);
  std::printf("segments of %d SIGKILLed producers, no agent: %zu segment files before the next "
              "stream opened, %zu after (its own, the live producer's and %zu it must not judge); "
              "opening took %.1f ms\n",
              kProducers, before, after, must_stay.size() - 1, ms);
  for (const auto& h : helpers) {
    EXPECT_NE(::access(h.segment.c_str(), F_OK), 0) << h.segment << " of a dead producer stayed";
  }
  EXPECT_NE(::access(closed_path.c_str(), F_OK), 0) << "a closed segment stayed";
  EXPECT_EQ(::access(alive.segment.c_str(), F_OK), 0) << "a live producer's segment was removed";
  EXPECT_EQ(::access(next.segment_path().c_str(), F_OK), 0);
  for (const auto& f : must_stay) {
    struct stat st {};
    EXPECT_EQ(::lstat(f.c_str(), &st), 0) << f << " was removed";
  }
  EXPECT_EQ(after, 2u + must_stay.size() - 1);

  // With an agent present the stream leaves everything to the agent.
  const std::string segment = helpers[1].segment;
  write_file(segment, dead);
  write_file(dir.path() + "/" + naming::agent_presence_file_name(ns), "");
  Stream again("t/again", o);
  EXPECT_EQ(::access(segment.c_str(), F_OK), 0);
  ::kill(alive.pid, SIGKILL);
  ::waitpid(alive.pid, nullptr, 0);
}

}  // namespace
}  // namespace mltap::test
