// A producer never crashes because of its environment: a full shm file system (a real 1 MiB
// tmpfs, mounted by the test as root; Docker's /dev/shm is 64 MiB) and a ring file truncated
// under a running stream. Before the SDK reserved its pages, the first write (or, on a file
// system already full, the stream's constructor) died of SIGBUS and left its file behind.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <thread>

#include "mltap/mltap.h"
#include "ring_fixture.hpp"

namespace mltap::test {
namespace {

using format::DType;

// A tmpfs of `bytes` mounted on a fresh directory, unmounted (lazily) with everything in it.
class TinyTmpfs {
 public:
  explicit TinyTmpfs(const char* size) {
    char tmpl[] = "/tmp/mltap-tinyfs-XXXXXX";
    if (!::mkdtemp(tmpl)) return;
    dir_ = tmpl;
    const std::string opts = std::string("size=") + size + ",mode=1777";
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) == 0) {
      mounted_ = true;
    } else {
      error_ = std::strerror(errno);
    }
  }
  ~TinyTmpfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    if (!dir_.empty()) ::rmdir(dir_.c_str());
  }
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }
  const std::string& path() const { return dir_; }
  std::size_t file_count() const {
    std::size_t n = 0;
    if (DIR* d = ::opendir(dir_.c_str())) {
      while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
      ::closedir(d);
    }
    return n;
  }
  // Fills what is left with a file, page by page, until the file system refuses.
  void fill() {
    const int fd = ::open((dir_ + "/filler").c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    off_t size = 0;
    while (::posix_fallocate(fd, size, 4096) == 0) size += 4096;
    ::close(fd);
  }

 private:
  std::string dir_;
  std::string error_;
  bool mounted_ = false;
};

#define REQUIRE_TMPFS(fs)                                                                \
  if (!(fs).mounted()) GTEST_SKIP() << "cannot mount a tmpfs (needs root): " << (fs).error()

StreamOptions default_options(const std::string& dir) {
  StreamOptions o;  // the SDK's defaults: 16 lanes of 4 MiB, far more than 1 MiB
  o.component = "test";
  o.shm_dir = dir;
  o.ns = "full";
  o.features = {"a", "b", "c", "d"};
  return o;
}

// Every way of writing, `n` times; returns the rows passed.
std::uint64_t write_every_way(Stream& s, int n) {
  const float row[4] = {1, 2, 3, 4};
  const float batch[12] = {};
  std::uint64_t rows = 0;
  for (int i = 0; i < n; ++i) {
    s.write(std::span<const float>(row));
    s.write(std::span<const float>(row), TraceId{static_cast<std::uint64_t>(i)});
    s.write_batch(batch, 3, 4);
    rows += 5;
  }
  return rows;
}

TEST(FullShm, StreamsOnAFullFileSystemRunRingLessAndLeaveNothing) {
  TinyTmpfs fs("1m");
  REQUIRE_TMPFS(fs);
  for (int producer = 0; producer < 2; ++producer) {  // the second finds the fs just as full
    Stream s("t/full", default_options(fs.path()));
    EXPECT_FALSE(s.has_ring());
    EXPECT_EQ(s.segment_path(), "");
    const std::uint64_t rows = write_every_way(s, 1000);
    const auto st = s.stats();
    EXPECT_EQ(st.rows_written, rows);
    EXPECT_EQ(st.rows_no_ring, rows);
    EXPECT_EQ(fs.file_count(), 0u) << "a ring-less stream leaves no file behind";
  }
  // The C ABI, likewise.
  mltap_stream_options co;
  mltap_stream_options_init(&co);
  co.shm_dir = fs.path().c_str();
  co.ns = "full";
  mltap_stream* cs = nullptr;
  char err[256] = {};
  ASSERT_EQ(mltap_stream_open("t/cfull", &co, &cs, err, sizeof err), 0) << err;
  EXPECT_EQ(mltap_has_ring(cs), 0);
  const float v[4] = {1, 2, 3, 4};
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(mltap_write_f32(cs, v, 4, i & 1, static_cast<std::uint64_t>(i)), MLTAP_DROPPED);
  }
  mltap_stats st{};
  st.struct_size = sizeof st;
  ASSERT_EQ(mltap_get_stats(cs, &st), 0);
  EXPECT_EQ(st.rows_no_ring, 1000u);
  EXPECT_EQ(st.rows_written, 1000u);
  mltap_stream_close(cs);
  EXPECT_EQ(fs.file_count(), 0u);
}

TEST(FullShm, LanesThatFindNoRoomCountTheirRowsAndTheRestKeepsWorking) {
  TinyTmpfs fs("1m");
  REQUIRE_TMPFS(fs);
  StreamOptions o = default_options(fs.path());
  o.ring_bytes = 64 << 10;  // one lane and the headers take ~120 KiB
  o.lanes = 4;
  o.sampling_budget = 0;
  Stream s("t/lanes", o);
  ASSERT_TRUE(s.has_ring());
  fs.fill();  // now no other lane's pages can be reserved
  const float row[4] = {1, 2, 3, 4};
  for (int i = 0; i < 100; ++i) EXPECT_EQ(s.write(std::span<const float>(row)), WriteResult::written);
  std::thread other([&] {
    for (int i = 0; i < 100; ++i) EXPECT_EQ(s.write(std::span<const float>(row)), WriteResult::dropped);
  });
  other.join();
  const auto st = s.stats();
  EXPECT_EQ(st.rows_committed, 100u);
  EXPECT_EQ(st.rows_no_lane, 100u);
  EXPECT_EQ(st.rows_written, 200u);
  auto r = open_reader(s.segment_path());
  ASSERT_TRUE(r);
  Collector c;
  r->poll(c);
  EXPECT_EQ(c.rows, 100u);
  ASSERT_TRUE(r->producer_counters());
  EXPECT_EQ(r->producer_counters()->rows_no_lane, 100u);
  // A second producer on the now full file system: ring-less, no file.
  const std::size_t files = fs.file_count();
  Stream second("t/lanes2", o);
  EXPECT_FALSE(second.has_ring());
  EXPECT_EQ(second.write(std::span<const float>(row)), WriteResult::dropped);
  EXPECT_EQ(second.stats().rows_no_ring, 1u);
  EXPECT_EQ(fs.file_count(), files);
}

// Someone truncates the ring file under a running stream (the same user or root can): the
// producer's next access to a page past the new end would raise SIGBUS and kill it.
TEST(Truncation, ARingTruncatedUnderTheStreamDoesNotKillTheProducer) {
  // To nothing, to the headers only (the lanes gone), and past lane 0 (the writing thread's lane
  // survives, later lanes are cut).
  for (const off_t keep : {off_t{0}, off_t{3 * 4096}, off_t{200 * 1024}}) {
    SCOPED_TRACE("truncated to " + std::to_string(keep) + " bytes");
    TempShmDir dir;
    Stream s("t/trunc", small_options(dir.path()));  // lanes of 4 + 32 + 64 KiB at 12 KiB
    ASSERT_TRUE(s.has_ring());
    const std::uint64_t before = write_every_way(s, 100);
    ASSERT_EQ(::truncate(s.segment_path().c_str(), keep), 0);
    const std::uint64_t after = write_every_way(s, 2000);  // wraps the 64 KiB ring many times
    const auto st = s.stats();  // reads every lane header: the cut ones fault, too
    EXPECT_FALSE(s.has_ring());
    EXPECT_EQ(s.flag_value("anything"), 0u);
    if (keep < 200 * 1024) {
      // The rows after the truncation count as lost with the ring, but those of the write that
      // met the fault (it completed into the anonymous memory that replaced the ring).
      EXPECT_GE(st.rows_no_ring, after - 3);
      EXPECT_LE(st.rows_no_ring, after);
    } else {
      // The writing thread's lane is still in the file: it kept writing into it, and its
      // counters survived the fault elsewhere.
      EXPECT_EQ(st.rows_committed, before + after);
      EXPECT_EQ(st.rows_no_ring, 0u);
    }
    const float row[4] = {};
    s.write(std::span<const float>(row));
  }
}

// The guard handles faults in ring mappings only: any other SIGBUS still kills the process.
TEST(Truncation, OtherBusErrorsStillKill) {
  TempShmDir dir;
  Stream s("t/guard", small_options(dir.path()));  // installs the guard
  ASSERT_TRUE(s.has_ring());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const std::string path = dir.path() + "/not-a-ring";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0600);
    if (fd < 0 || ::ftruncate(fd, 4096) != 0) ::_exit(2);
    auto* p = static_cast<volatile char*>(::mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    if (p == MAP_FAILED) ::_exit(3);
    p[4096] = 1;  // past the end of the file: SIGBUS
    ::_exit(4);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  // Killed by the signal, or (a sanitizer's handler was installed before ours, and chained to)
  // reported and exited non-zero; never survived the fault.
  if (WIFSIGNALED(status)) {
#if defined(__SANITIZE_ADDRESS__)
    // ASan's own SIGBUS handler (chained to) reports the fault and aborts (abort_on_error=1).
    EXPECT_TRUE(WTERMSIG(status) == SIGBUS || WTERMSIG(status) == SIGABRT) << WTERMSIG(status);
#else
    EXPECT_EQ(WTERMSIG(status), SIGBUS);
#endif
  } else {
    ASSERT_TRUE(WIFEXITED(status));
    const int code = WEXITSTATUS(status);
    EXPECT_NE(code, 4) << "the bus error was swallowed";
    EXPECT_TRUE(code != 0 && code != 2 && code != 3) << "exit " << code << " (2, 3: no mapping)";
  }
}

}  // namespace
}  // namespace mltap::test
