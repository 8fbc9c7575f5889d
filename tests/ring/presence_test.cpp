// The agent's presence file cannot be squatted (audit 2026-12-01, item 12): a file another uid
// created first under that name is replaced when the directory lets mltapd remove it; a name it
// cannot take over is logged once and exported as a gauge, never warned about on every scan.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <sstream>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "agent/ingest/ingest.hpp"
#include "mltap/naming.hpp"
#include "ring_fixture.hpp"

namespace mltap::test {
namespace {

constexpr uid_t kOtherUid = 65534;  // nobody

// Captures what the ingest layer logs while it lives.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(text_)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~LogCapture() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  std::size_t count(const std::string& what) const {
    const std::string s = text_.str();
    std::size_t n = 0;
    for (auto pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos + 1)) n++;
    return n;
  }
  std::string text() const { return text_.str(); }

 private:
  std::ostringstream text_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

ingest::IngestConfig config(const TempShmDir& dir, const std::string& ns) {
  ingest::IngestConfig c;
  c.ns = ns;
  c.shm_dir = dir.path();
  return c;
}

TEST(PresenceFile, AFileAnotherUidCreatedFirstIsReplaced) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown)";
  TempShmDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 01777), 0);  // like /dev/shm
  const std::string path = dir.path() + "/" + naming::agent_presence_file_name("psq");
  { std::ofstream(path) << "squatter\n"; }
  ASSERT_EQ(::chown(path.c_str(), kOtherUid, kOtherUid), 0);
  LogCapture log;
  {
    ingest::Ingest in(config(dir, "psq"));
    in.run_once();
    struct stat st {};
    ASSERT_EQ(::lstat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u);
    std::ifstream f(path);
    std::string pid;
    f >> pid;
    EXPECT_EQ(pid, std::to_string(::getpid()));
    EXPECT_FALSE(in.snapshot()->presence_squatted);
    EXPECT_EQ(log.count("was held by uid 65534"), 1u) << log.text();
    // Touched through our descriptor: the mtime moves.
    const auto before = st.st_mtim;
    ::usleep(1'100'000);
    in.run_once();
    ASSERT_EQ(::lstat(path.c_str(), &st), 0);
    EXPECT_TRUE(st.st_mtim.tv_sec > before.tv_sec || st.st_mtim.tv_nsec != before.tv_nsec);
  }
  EXPECT_NE(::access(path.c_str(), F_OK), 0) << "the agent removes its own presence file at stop";
}

TEST(PresenceFile, ANameItCannotTakeOverIsLoggedOnceAndExported) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown)";
  TempShmDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 01777), 0);
  const std::string path = dir.path() + "/" + naming::agent_presence_file_name("psq");
  // A directory under the name (any user can mkdir in /dev/shm): unlink(2) cannot remove it.
  ASSERT_EQ(::mkdir(path.c_str(), 0755), 0);
  { std::ofstream(path + "/x") << "x"; }
  ASSERT_EQ(::chown(path.c_str(), kOtherUid, kOtherUid), 0);
  LogCapture log;
  ingest::Ingest in(config(dir, "psq"));
  for (int i = 0; i < 8; ++i) in.run_once();
  EXPECT_TRUE(in.snapshot()->presence_squatted);
  EXPECT_EQ(log.count("is held by uid 65534"), 1u) << log.text();
  EXPECT_EQ(log.count("presence file"), 1u) << log.text();
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  // Once the name is free again, the agent takes it on its next scan.
  ::unlink((path + "/x").c_str());
  ASSERT_EQ(::rmdir(path.c_str()), 0);
  in.run_once();
  EXPECT_FALSE(in.snapshot()->presence_squatted);
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_uid, 0u);
}

}  // namespace
}  // namespace mltap::test
