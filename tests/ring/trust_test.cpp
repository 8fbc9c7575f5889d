// The producer trust check (docs/security.md) inside one process: the parsers it relies on, and
// the ingest layer refusing forged segments (naming pid 1, a foreign pid namespace), reading a
// closed ring of an ended producer only as anonymous history, filtering artifacts and signalling
// through the pidfd of a real verified child process. tests/trust does the same across real
// unprivileged accounts.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <span>

#include "agent/ingest/ingest.hpp"
#include "agent/ingest/trust.hpp"
#include "mltap/naming.hpp"
#include "ingest_support.hpp"

namespace mltap::test {
namespace {

using ingest::TrustFailure;

TEST(TrustMaps, FindsTheInodeByDeviceAndInode) {
  const std::string maps =
      "7f00-7f10 rw-s 00000000 00:1a 4242                       /dev/shm/mltap.x.1.0\n"
      "7f10-7f20 r--p 00000000 103:02 99 /usr/lib/libc.so\n"
      "garbage line\n"
      "7f20-7f30 rw-p 00000000 00:00 0\n";
  EXPECT_TRUE(ingest::maps_text_maps_inode(maps, makedev(0, 0x1a), 4242));
  EXPECT_TRUE(ingest::maps_text_maps_inode(maps, makedev(0x103, 2), 99));
  EXPECT_FALSE(ingest::maps_text_maps_inode(maps, makedev(0, 0x1b), 4242));  // other device
  EXPECT_FALSE(ingest::maps_text_maps_inode(maps, makedev(0, 0x1a), 424));   // other inode
  EXPECT_FALSE(ingest::maps_text_maps_inode("", makedev(0, 0x1a), 4242));
}

TEST(TrustMaps, SeesARealMappingOfThisProcess) {
  TempShmDir dir;
  const std::string f = dir.path() + "/mapped";
  const int fd = ::open(f.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 4096), 0);
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  std::ifstream before("/proc/self/maps");
  const std::string unmapped((std::istreambuf_iterator<char>(before)), {});
  EXPECT_FALSE(ingest::maps_text_maps_inode(unmapped, st.st_dev, st.st_ino));
  void* p = ::mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd, 0);
  ASSERT_NE(p, MAP_FAILED);
  std::ifstream after("/proc/self/maps");
  const std::string mapped((std::istreambuf_iterator<char>(after)), {});
  EXPECT_TRUE(ingest::maps_text_maps_inode(mapped, st.st_dev, st.st_ino));
  ::munmap(p, 4096);
  ::close(fd);
}

// A fake procfs with one process whose maps list `inodes` on device 00:1a.
struct FakeProc {
  TempShmDir root;
  void set_maps(std::uint32_t pid, const std::vector<std::uint64_t>& inodes) {
    ::mkdir((root.path() + "/" + std::to_string(pid)).c_str(), 0700);
    std::ofstream out(root.path() + "/" + std::to_string(pid) + "/maps", std::ios::trunc);
    std::uint64_t at = 0x7f0000000000;
    for (auto ino : inodes) {
      out << std::hex << at << "-" << at + 0x1000 << std::dec << " rw-s 00000000 00:1a " << ino
          << " /dev/shm/mltap.x.1." << ino << "\n";
      at += 0x1000;
    }
  }
  ~FakeProc() {
    for (const auto& d : root.files()) {
      ::unlink((d + "/maps").c_str());
      ::rmdir(d.c_str());
    }
  }
};

// Attaching N segments of one process reads its maps once per scan, not once per segment (the
// O(N^2) of 5,000 segments of one process).
TEST(TrustMapsCache, OneReadServesEverySegmentOfTheProcessInAScan) {
  FakeProc proc;
  std::vector<std::uint64_t> inodes;
  for (std::uint64_t i = 0; i < 2000; ++i) inodes.push_back(1000 + i);
  proc.set_maps(77, inodes);
  ingest::MapsCache cache;
  const std::uint64_t opened = ingest::monotonic_ns();
  int err = 0;
  for (auto ino : inodes) {
    ASSERT_EQ(cache.maps(77, 5, makedev(0, 0x1a), ino, opened, proc.root.path(), err),
              ingest::MapsCache::Answer::mapped);
  }
  EXPECT_EQ(cache.reads(), 1u);
  // Another start time is another process (a reused pid): never served from this parse.
  EXPECT_EQ(cache.maps(77, 6, makedev(0, 0x1a), 1000, opened, proc.root.path(), err),
            ingest::MapsCache::Answer::mapped);
  EXPECT_EQ(cache.reads(), 2u);
  cache.clear();
  EXPECT_EQ(cache.maps(77, 5, makedev(0, 0x1a), 1000, opened, proc.root.path(), err),
            ingest::MapsCache::Answer::mapped);
  EXPECT_EQ(cache.reads(), 3u);
}

// A "not mapped" from a parse older than the file's opening is never believed: a ring created
// (and mapped) after the parse is read afresh and found; one that is not mapped stays refused.
TEST(TrustMapsCache, AMissOnAnOlderParseReadsAgain) {
  FakeProc proc;
  proc.set_maps(78, {10, 11});
  ingest::MapsCache cache;
  int err = 0;
  const auto dev = makedev(0, 0x1a);
  ASSERT_EQ(cache.maps(78, 1, dev, 10, ingest::monotonic_ns(), proc.root.path(), err),
            ingest::MapsCache::Answer::mapped);
  // Opened before the parse: the parse is fresh enough, its "no" stands, no new read.
  const std::uint64_t early = 0;
  EXPECT_EQ(cache.maps(78, 1, dev, 12, early, proc.root.path(), err), ingest::MapsCache::Answer::not_mapped);
  EXPECT_EQ(cache.reads(), 1u);
  // The producer maps inode 12 now; the agent opened it after the parse: read again.
  proc.set_maps(78, {10, 11, 12});
  EXPECT_EQ(cache.maps(78, 1, dev, 12, ingest::monotonic_ns(), proc.root.path(), err),
            ingest::MapsCache::Answer::mapped);
  EXPECT_EQ(cache.reads(), 2u);
  // Opened after the last parse, still not mapped: read again, refused.
  EXPECT_EQ(cache.maps(78, 1, dev, 13, ingest::monotonic_ns(), proc.root.path(), err),
            ingest::MapsCache::Answer::not_mapped);
  EXPECT_EQ(cache.reads(), 3u);
  // A process gone: its maps cannot be read.
  EXPECT_EQ(cache.maps(79, 1, dev, 10, ingest::monotonic_ns(), proc.root.path(), err),
            ingest::MapsCache::Answer::gone);
}

TEST(TrustMaps, ListsEveryMappedInode) {
  const std::string maps =
      "7f00-7f10 rw-s 00000000 00:1a 4242 /dev/shm/a\n"
      "7f10-7f20 rw-s 00001000 00:1a 4242 /dev/shm/a\n"
      "7f20-7f30 rw-p 00000000 00:00 0\n"
      "7f30-7f40 r--p 00000000 103:02 99 /usr/lib/libc.so\n";
  const auto inodes = ingest::maps_text_inodes(maps);
  ASSERT_EQ(inodes.size(), 2u);
  EXPECT_TRUE(std::binary_search(inodes.begin(), inodes.end(),
                                 std::pair<std::uint64_t, std::uint64_t>{makedev(0, 0x1a), 4242}));
  EXPECT_TRUE(std::binary_search(inodes.begin(), inodes.end(),
                                 std::pair<std::uint64_t, std::uint64_t>{makedev(0x103, 2), 99}));
}

TEST(TrustPaths, UnderByWholeComponents) {
  EXPECT_TRUE(ingest::path_is_under("/srv/models/a", "/srv/models"));
  EXPECT_TRUE(ingest::path_is_under("/srv/models", "/srv/models/"));
  EXPECT_FALSE(ingest::path_is_under("/srv/models2/a", "/srv/models"));
  EXPECT_FALSE(ingest::path_is_under("/srv", "/srv/models"));
  EXPECT_TRUE(ingest::path_is_under("/anything", "/"));
  EXPECT_FALSE(ingest::path_is_under("/srv/models", ""));
}

TEST(TrustPaths, ReadabilityByTheProducersCredentials) {
  TempShmDir dir;  // /dev/shm/mltap-test-XXXXXX, 0700 root
  const std::string inner = dir.path() + "/models";
  ASSERT_EQ(::mkdir(inner.c_str(), 0755), 0);
  ingest::ProcessCredentials nobody{65534, 65534, {}};
  ingest::ProcessCredentials root{0, 0, {}};
  EXPECT_TRUE(ingest::credentials_can_read_dir(root, inner));
  EXPECT_FALSE(ingest::credentials_can_read_dir(nobody, inner)) << "parent 0700 root: not searchable";
  ASSERT_EQ(::chmod(dir.path().c_str(), 0711), 0);
  EXPECT_TRUE(ingest::credentials_can_read_dir(nobody, inner));
  ASSERT_EQ(::chmod(inner.c_str(), 0750), 0);
  EXPECT_FALSE(ingest::credentials_can_read_dir(nobody, inner)) << "group root only";
  ingest::ProcessCredentials in_group{65534, 65534, {0}};
  EXPECT_TRUE(ingest::credentials_can_read_dir(in_group, inner));
  ASSERT_EQ(::chown(inner.c_str(), 65534, 65534), 0);
  ASSERT_EQ(::chmod(inner.c_str(), 0300), 0);
  EXPECT_FALSE(ingest::credentials_can_read_dir(nobody, inner)) << "owner without read";
  ::rmdir(inner.c_str());
}

// Copies the segment at `from` into a new segment file of `ns` naming another producer.
std::string forge(const TempShmDir& dir, const std::string& ns, const std::string& from,
                  std::uint32_t pid, std::uint64_t ticks, std::uint64_t n,
                  std::uint64_t pid_ns = 0, bool closed = false,
                  std::optional<std::uint32_t> header_uid = std::nullopt) {
  std::ifstream in(from, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  auto* h = reinterpret_cast<format::SegmentHeader*>(bytes.data());
  h->producer_pid = pid;
  h->producer_start_ticks = ticks;
  if (pid_ns != 0) h->pid_ns_inode = pid_ns;
  if (closed) h->state = static_cast<std::uint32_t>(format::SegmentState::closed);
  if (header_uid) h->producer_uid = *header_uid;
  const std::string path = dir.path() + "/" + naming::segment_file_name(ns, pid, n);
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

struct Captured : ingest::ProducerObserver {
  std::vector<core::SegmentIdentity> attached;
  void on_producer_attached(const core::SegmentIdentity& p) override { attached.push_back(p); }
  void on_producer_gone(const core::SegmentIdentity&, core::ProducerState) override {}
};

TEST(TrustIngest, RefusesForgedProducersAndReadsTheRealOne) {
  TempShmDir dir;
  const std::string ns = "trust1";
  Stream real("t/real", one_lane(dir, ns));
  const float v[1] = {1};
  for (int i = 0; i < 10; ++i) real.write(std::span<const float>(v));
  // A root process like this file's owner, which does not map the file.
  pid_t sleeper = -1;
  const char* sleep_argv[] = {"/bin/sleep", "60", nullptr};
  ASSERT_EQ(posix_spawn(&sleeper, "/bin/sleep", nullptr, nullptr, const_cast<char**>(sleep_argv), environ), 0);
  struct Reap {
    pid_t pid;
    ~Reap() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reap{sleeper};
  std::optional<std::uint64_t> sleeper_ticks;
  for (int i = 0; i < 100 && !sleeper_ticks; ++i) {
    sleeper_ticks = naming::process_start_ticks(static_cast<std::uint32_t>(sleeper), "/proc");
  }
  ASSERT_TRUE(sleeper_ticks);
  forge(dir, ns, real.segment_path(), static_cast<std::uint32_t>(sleeper), *sleeper_ticks, 901);
  // Our own pid with a wrong start time (a reused pid), claiming another uid than the file's
  // (a ring of an ended producer with the file owner's uid is history: see below).
  const auto self = static_cast<std::uint32_t>(::getpid());
  forge(dir, ns, real.segment_path(), self, 12345, 902, 0, false, 4242);
  // Another pid namespace.
  forge(dir, ns, real.segment_path(), self, *naming::process_start_ticks(self, "/proc"), 903, 77);

  Captured seen;
  ingest::Ingest in(config_for(dir, ns));
  in.set_producer_observer(&seen);
  in.run_once();
  auto snap = in.snapshot();
  EXPECT_EQ(snap->unverified_total.at("not_mapped"), 1u);
  EXPECT_EQ(snap->unverified_total.at("process_gone"), 1u);
  EXPECT_EQ(snap->unverified_total.at("foreign_pid_ns"), 1u);
  EXPECT_EQ(snap->unverified_total.at("owner_mismatch"), 0u);
  EXPECT_EQ(snap->segments_rejected, 3u);
  const auto* st = find_stream(*snap, "t/real");
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->records_total, 10u) << "only the real segment was read";
  ASSERT_EQ(st->producers.size(), 1u);
  EXPECT_EQ(st->producers[0].id.pid, self);
  ASSERT_EQ(seen.attached.size(), 1u) << "only the verified producer is reported to the tracer";
  EXPECT_EQ(seen.attached[0].producer.pid, self);
  // Not re-counted on the next scans.
  in.run_once();
  EXPECT_EQ(in.snapshot()->unverified_total.at("not_mapped"), 1u);
  // Signals: mltapd never signals itself, even as a verified producer.
  const core::SignalReport r = in.signal_producers("t/real", SIGUSR1);
  EXPECT_EQ(r.signalled, 0u);
  EXPECT_EQ(r.refused, 1u) << r.detail;
}

TEST(TrustIngest, AClosedRingOfAnEndedProducerIsAnonymousHistory) {
  TempShmDir dir;
  const std::string ns = "trust2";
  const auto ticks1 = naming::process_start_ticks(1, "/proc");
  ASSERT_TRUE(ticks1);
  {
    Stream real("t/hist", one_lane(dir, ns));
    const float v[1] = {1};
    for (int i = 0; i < 7; ++i) real.write(std::span<const float>(v));
    // Closed, naming pid 1: read as the file owner's records, with no process behind them.
    forge(dir, ns, real.segment_path(), 1, *ticks1, 904, 0, /*closed=*/true);
  }  // closed and unlinked (no agent present): only the forged closed copy remains
  ASSERT_EQ(dir.files().size(), 1u);

  Captured seen;
  ingest::Ingest in(config_for(dir, ns));
  in.set_producer_observer(&seen);
  in.run_once();
  auto snap = in.snapshot();
  const auto* st = find_stream(*snap, "t/hist");
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->records_total, 7u);
  ASSERT_EQ(st->producers.size(), 1u);
  EXPECT_EQ(st->producers[0].id.pid, 0u) << "the header's pid is a claim nobody checked";
  EXPECT_TRUE(seen.attached.empty()) << "history is never traced";
  EXPECT_EQ(in.signal_producers("t/hist", SIGTERM).signalled, 0u);
}

// A producer SIGKILLed before the agent's scan: its ring is still `ready` and cannot be verified
// (process_gone), but it is the file owner's: read as history (counted, pid 0, never traced or
// signalled), then removed like any dead producer's ring instead of staying in the directory.
TEST(TrustIngest, AReadyRingOfAProducerKilledBeforeTheScanIsHistoryAndRemoved) {
  TempShmDir dir;
  const std::string ns = "trust3";
  pid_t gone = -1;
  const char* argv[] = {"/bin/true", nullptr};
  ASSERT_EQ(posix_spawn(&gone, "/bin/true", nullptr, nullptr, const_cast<char**>(argv), environ), 0);
  ASSERT_EQ(::waitpid(gone, nullptr, 0), gone);
  std::string path;
  {
    std::ofstream(dir.path() + "/" + naming::agent_presence_file_name(ns)) << "";  // keep rings
    Stream real("t/killed", one_lane(dir, ns));
    const float v[1] = {1};
    for (int i = 0; i < 5; ++i) real.write(std::span<const float>(v));
    path = forge(dir, ns, real.segment_path(), static_cast<std::uint32_t>(gone), 1, 905);
    ::unlink(real.segment_path().c_str());
  }
  auto c = config_for(dir, ns);
  c.dead_producer_grace = std::chrono::nanoseconds(0);
  Captured seen;
  ingest::Ingest in(c);
  in.set_producer_observer(&seen);
  in.run_once();
  auto snap = in.snapshot();
  EXPECT_EQ(snap->unverified_total.at("process_gone"), 0u);
  const auto* st = find_stream(*snap, "t/killed");
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->records_total, 5u);
  EXPECT_EQ(st->writes_total, 5u);
  ASSERT_EQ(st->producers.size(), 1u);
  EXPECT_EQ(st->producers[0].id.pid, 0u);
  EXPECT_TRUE(seen.attached.empty()) << "history is never traced";
  EXPECT_EQ(in.signal_producers("t/killed", SIGTERM).signalled, 0u);
  for (int i = 0; i < 5 && ::access(path.c_str(), F_OK) == 0; ++i) in.run_once();
  EXPECT_NE(::access(path.c_str(), F_OK), 0) << "the ended producer's ring is removed";
}

// ingest.max_streams full of streams whose producers ended: a new stream takes the slot of one
// with no attached producer instead of being ignored; live streams are never forgotten.
TEST(TrustIngest, StreamsOfEndedProducersReleaseTheirSlotsAtTheCap) {
  TempShmDir dir;
  const std::string ns = "trustcap";
  auto c = config_for(dir, ns);
  c.max_streams = 2;
  c.closed_segment_grace = std::chrono::nanoseconds(0);
  ingest::Ingest in(c);
  const float v[1] = {1};
  auto live = std::make_unique<Stream>("t/live", one_lane(dir, ns));
  {
    std::ofstream(dir.path() + "/" + naming::agent_presence_file_name(ns)) << "";  // keep closed rings
    Stream ended("t/ended", one_lane(dir, ns));
    ended.write(std::span<const float>(v));
    in.run_once();
  }  // closed: drained and retired on the next rounds
  in.run_once();
  in.run_once();
  ASSERT_NE(find_stream(*in.snapshot(), "t/ended"), nullptr);
  Stream next("t/next", one_lane(dir, ns));
  next.write(std::span<const float>(v));
  in.run_once();
  auto snap = in.snapshot();
  EXPECT_EQ(find_stream(*snap, "t/ended"), nullptr) << "its slot was released";
  ASSERT_NE(find_stream(*snap, "t/next"), nullptr);
  EXPECT_EQ(find_stream(*snap, "t/next")->records_total, 1u);
  ASSERT_NE(find_stream(*snap, "t/live"), nullptr);
  EXPECT_EQ(snap->streams_cut, 0u);
  // Both remaining streams have live producers: a third new stream waits (ignored), counted.
  Stream third("t/third", one_lane(dir, ns));
  in.run_once();
  snap = in.snapshot();
  EXPECT_EQ(find_stream(*snap, "t/third"), nullptr);
  EXPECT_EQ(snap->streams_cut, 1u);
  EXPECT_EQ(snap->segments_ignored, 1u);
}

TEST(TrustIngest, WithoutVerificationForgedSegmentsAreRead) {
  // What ingest.verify_producers: false (INSECURE) means: the same forged segment is read.
  TempShmDir dir;
  const std::string ns = "trust3";
  Stream real("t/x", one_lane(dir, ns));
  const auto ticks1 = naming::process_start_ticks(1, "/proc");
  ASSERT_TRUE(ticks1);
  forge(dir, ns, real.segment_path(), 1, *ticks1, 905);
  auto c = config_for(dir, ns);
  c.verify_producers = false;
  ingest::Ingest in(c);
  in.run_once();
  const auto* st = find_stream(*in.snapshot(), "t/x");
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->producers.size(), 2u);
  // Even then pid 1 is never signalled.
  const core::SignalReport r = in.signal_producers("t/x", 0);
  EXPECT_EQ(r.signalled, 0u);
  EXPECT_EQ(r.refused, 2u) << r.detail;  // pid 1, and this process
}

TEST(TrustIngest, ArtifactsAreWatchedOnlyUnderTheConfiguredDirectories) {
  TempShmDir dir;
  const std::string ns = "trust4";
  const std::string allowed = dir.path() + "/models", other = dir.path() + "/elsewhere";
  ASSERT_EQ(::mkdir(allowed.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(other.c_str(), 0755), 0);
  auto o = one_lane(dir, ns);
  o.artifacts = {allowed + "/model.pt", other + "/secret.pkl"};
  Stream s("t/art", o);
  auto c = config_for(dir, ns);
  c.artifact_dirs = {allowed};
  Captured seen;
  ingest::Ingest in(c);
  in.set_producer_observer(&seen);
  in.run_once();
  ASSERT_EQ(seen.attached.size(), 1u);
  EXPECT_EQ(seen.attached[0].artifacts, std::vector<std::string>{allowed});
  EXPECT_EQ(in.snapshot()->artifacts_refused, 1u);
  ::rmdir(allowed.c_str());
  ::rmdir(other.c_str());
}

TEST(TrustIngest, SignalsAVerifiedChildThroughItsPidfd) {
  TempShmDir dir;
  const std::string ns = "trust5";
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  const char* argv[] = {MLTAP_PRODUCER_HELPER, dir.path().c_str(), ns.c_str(), "t/child", nullptr};
  pid_t pid = -1;
  ASSERT_EQ(posix_spawn(&pid, MLTAP_PRODUCER_HELPER, &fa, nullptr, const_cast<char**>(argv), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  std::string line;
  char ch;
  while (::read(out[0], &ch, 1) == 1 && ch != '\n') line += ch;
  ::close(out[0]);
  ASSERT_EQ(line.rfind("ready ", 0), 0u) << line;

  ingest::Ingest in(config_for(dir, ns));
  in.run_once();
  ASSERT_EQ(in.producers("t/child").size(), 1u);
  const core::SignalReport r = in.signal_producers("t/child", SIGTERM);
  EXPECT_EQ(r.signalled, 1u) << r.detail;
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
  // The pidfd now refers to an exited process: nothing else can get the signal.
  const core::SignalReport again = in.signal_producers("t/child", SIGTERM);
  EXPECT_EQ(again.signalled, 0u) << again.detail;
}

}  // namespace
}  // namespace mltap::test
