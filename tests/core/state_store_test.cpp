// StateStore on a real file system: replacement is atomic even when the writer is killed
// mid-write, unusable documents are moved aside (not deleted, not used), errors name the path.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/state_store.hpp"

using mltap::core::StateDocument;
using mltap::core::StateReadResult;
using mltap::core::StateStore;
namespace fs = std::filesystem;

namespace {

class StateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mltap-state-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  std::vector<fs::path> aside(const std::string& name) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir_)) {
      if (e.path().filename().string().rfind(name + ".json.unusable-", 0) == 0) out.push_back(e.path());
    }
    return out;
  }
  fs::path dir_;
};

TEST_F(StateStoreTest, WritesCreatesTheDirectoryAndReadsBack) {
  StateStore store((dir_ / "a" / "b").string());
  std::string err;
  ASSERT_TRUE(store.write({"detectors.x", 2, R"({"k":[1,2,3]})"}, err)) << err;
  EXPECT_EQ(fs::status(dir_ / "a" / "b").permissions() & fs::perms::all, fs::perms::owner_all);
  const auto r = store.read("detectors.x", 2);
  ASSERT_EQ(r.status, StateReadResult::Status::ok) << r.detail;
  EXPECT_EQ(r.version, 2u);
  EXPECT_EQ(nlohmann::json::parse(r.data), nlohmann::json::parse(R"({"k":[1,2,3]})"));
  const auto file = nlohmann::json::parse(slurp(dir_ / "a" / "b" / "detectors.x.json"));
  EXPECT_EQ(file["format"], "mltap-state");
  EXPECT_EQ(file["name"], "detectors.x");
  EXPECT_GT(file["written_unix_ns"].get<std::uint64_t>(), 0u);
  EXPECT_EQ(store.read("detectors.y", 2).status, StateReadResult::Status::missing);
}

TEST_F(StateStoreTest, ReplaceLeavesOnlyTheNewDocument) {
  StateStore store(dir_.string());
  std::string err;
  ASSERT_TRUE(store.write({"s", 1, R"({"v":1})"}, err)) << err;
  ASSERT_TRUE(store.write({"s", 1, R"({"v":2})"}, err)) << err;
  const auto r = store.read("s", 1);
  ASSERT_EQ(r.status, StateReadResult::Status::ok);
  EXPECT_EQ(nlohmann::json::parse(r.data)["v"], 2);
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir_)) files.push_back(e.path().filename().string());
  EXPECT_EQ(files, std::vector<std::string>{"s.json"});  // no temporary file left behind
}

// The writer is SIGKILLed at random moments while it replaces a large document over and over:
// the reader must always find one whole document, the old or the new one.
TEST_F(StateStoreTest, KilledWriterLeavesAWholeDocument) {
  StateStore store(dir_.string());
  std::string err;
  const std::string big_a = "{\"fill\":\"" + std::string(1 << 20, 'a') + "\",\"v\":\"a\"}";
  const std::string big_b = "{\"fill\":\"" + std::string(1 << 20, 'b') + "\",\"v\":\"b\"}";
  ASSERT_TRUE(store.write({"big", 1, big_a}, err)) << err;
  std::mt19937 rng(7);
  for (int round = 0; round < 12; ++round) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      std::string e;
      for (int i = 0;; ++i) store.write({"big", 1, (i % 2) ? big_a : big_b}, e);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(2000 + rng() % 30000));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    const auto r = store.read("big", 1);
    ASSERT_EQ(r.status, StateReadResult::Status::ok) << "round " << round << ": " << r.detail;
    const auto v = nlohmann::json::parse(r.data)["v"].get<std::string>();
    EXPECT_TRUE(v == "a" || v == "b");
    EXPECT_EQ(nlohmann::json::parse(r.data)["fill"].get<std::string>().size(), std::size_t{1} << 20);
  }
  // A temporary file left by a killed writer is neither listed nor read.
  EXPECT_EQ(store.list(""), std::vector<std::string>{"big"});
}

TEST_F(StateStoreTest, CorruptFileIsMovedAsideAndReported) {
  StateStore store(dir_.string());
  std::string err;
  ASSERT_TRUE(store.write({"detectors.s", 1, R"({"v":1})"}, err)) << err;
  const std::string truncated = slurp(dir_ / "detectors.s.json").substr(0, 30);
  std::ofstream(dir_ / "detectors.s.json", std::ios::trunc) << truncated;
  const auto r = store.read("detectors.s", 1);
  EXPECT_EQ(r.status, StateReadResult::Status::unusable);
  EXPECT_NE(r.detail.find((dir_ / "detectors.s.json").string()), std::string::npos) << r.detail;
  EXPECT_NE(r.detail.find("not valid JSON"), std::string::npos) << r.detail;
  EXPECT_FALSE(fs::exists(dir_ / "detectors.s.json"));
  const auto moved = aside("detectors.s");
  ASSERT_EQ(moved.size(), 1u);
  EXPECT_EQ(slurp(moved[0]), truncated);  // kept as it was, for a human to look at
  EXPECT_NE(r.detail.find(moved[0].string()), std::string::npos) << r.detail;
  // Now missing; writing works again.
  EXPECT_EQ(store.read("detectors.s", 1).status, StateReadResult::Status::missing);
  ASSERT_TRUE(store.write({"detectors.s", 1, R"({"v":2})"}, err)) << err;
  EXPECT_EQ(store.read("detectors.s", 1).status, StateReadResult::Status::ok);
}

TEST_F(StateStoreTest, OtherJsonAndWrongNameAreUnusable) {
  StateStore store(dir_.string());
  std::string err;
  ASSERT_TRUE(store.write({"a", 1, "{}"}, err)) << err;
  fs::rename(dir_ / "a.json", dir_ / "b.json");  // a document under another name
  auto r = store.read("b", 1);
  EXPECT_EQ(r.status, StateReadResult::Status::unusable);
  EXPECT_NE(r.detail.find("name is not 'b'"), std::string::npos) << r.detail;
  std::ofstream(dir_ / "c.json") << R"({"some": "other json"})";
  r = store.read("c", 1);
  EXPECT_EQ(r.status, StateReadResult::Status::unusable);
  EXPECT_NE(r.detail.find("not an mltap state document"), std::string::npos) << r.detail;
  EXPECT_EQ(aside("b").size(), 1u);
  EXPECT_EQ(aside("c").size(), 1u);
}

TEST_F(StateStoreTest, NewerVersionIsMovedAside) {
  StateStore store(dir_.string());
  std::string err;
  ASSERT_TRUE(store.write({"new", 3, R"({"v":3})"}, err)) << err;
  ASSERT_TRUE(store.write({"same", 3, R"({"v":3})"}, err)) << err;
  EXPECT_EQ(store.read("same", 3).status, StateReadResult::Status::ok);
  const auto r = store.read("new", 2);
  EXPECT_EQ(r.status, StateReadResult::Status::unusable);
  EXPECT_NE(r.detail.find("version 3 is newer"), std::string::npos) << r.detail;
  EXPECT_FALSE(fs::exists(dir_ / "new.json"));
  EXPECT_EQ(aside("new").size(), 1u);
}

TEST_F(StateStoreTest, UnwritableDirectoryErrorNamesThePath) {
  fs::create_directories(dir_);
  std::ofstream(dir_ / "file") << "x";
  // A file where a directory should be: fails for root too (permission bits would not).
  StateStore store((dir_ / "file" / "state").string());
  std::string err;
  EXPECT_FALSE(store.prepare(err));
  EXPECT_NE(err.find((dir_ / "file" / "state").string()), std::string::npos) << err;
  err.clear();
  EXPECT_FALSE(store.write({"s", 1, "{}"}, err));
  EXPECT_NE(err.find((dir_ / "file").string()), std::string::npos) << err;
  EXPECT_NE(err.find("mkdir"), std::string::npos) << err;
}

TEST_F(StateStoreTest, FailedWriteKeepsThePreviousDocument) {
  StateStore store(dir_.string());
  std::string err;
  ASSERT_TRUE(store.write({"s", 1, R"({"v":1})"}, err)) << err;
  // The temporary file's name is taken by a directory: open() fails (EISDIR), for root too.
  fs::create_directory(dir_ / ".s.json.tmp");
  EXPECT_FALSE(store.write({"s", 1, R"({"v":2})"}, err));
  EXPECT_NE(err.find((dir_ / ".s.json.tmp").string()), std::string::npos) << err;
  const auto r = store.read("s", 1);
  ASSERT_EQ(r.status, StateReadResult::Status::ok);
  EXPECT_EQ(nlohmann::json::parse(r.data)["v"], 1);
  std::vector<std::string> errors;
  EXPECT_EQ(store.write_all({{"t", 1, "{}"}, {"s", 1, "{}"}, {"u", 1, "{}"}}, errors), 2u);
  EXPECT_EQ(errors.size(), 1u);
}

TEST_F(StateStoreTest, RejectsBadNamesAndData) {
  for (const char* bad : {"../x", "", ".", "..", ".hidden", "a/b", "A", "x y", "/abs"}) {
    EXPECT_FALSE(StateStore::valid_name(bad)) << bad;
  }
  EXPECT_FALSE(StateStore::valid_name(std::string(65, 'a')));
  for (const char* good : {"detectors.stream-0123abcd", "a-b_c.d", "x"}) {
    EXPECT_TRUE(StateStore::valid_name(good)) << good;
  }
  EXPECT_TRUE(StateStore::valid_name(std::string(64, 'a')));
  StateStore store(dir_.string());
  std::string err;
  EXPECT_FALSE(store.write({"../x", 1, "{}"}, err));
  EXPECT_NE(err.find("../x"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_.parent_path() / "x.json"));
  EXPECT_FALSE(store.write({"s", 1, "{not json"}, err));
  EXPECT_EQ(store.read("../x", 1).status, StateReadResult::Status::unusable);
  EXPECT_FALSE(store.remove("../x", err));
}

TEST_F(StateStoreTest, ListAndRemove) {
  StateStore store(dir_.string());
  EXPECT_TRUE(store.list("").empty());  // no directory yet
  std::string err;
  for (const char* n : {"detectors.b", "detectors.a", "ingest.a"}) ASSERT_TRUE(store.write({n, 1, "{}"}, err));
  std::ofstream(dir_ / "detectors.c.json.unusable-1") << "x";
  EXPECT_EQ(store.list("detectors."), (std::vector<std::string>{"detectors.a", "detectors.b"}));
  EXPECT_TRUE(store.remove("detectors.a", err)) << err;
  EXPECT_TRUE(store.remove("detectors.a", err)) << err;  // absent already
  EXPECT_EQ(store.list("detectors."), std::vector<std::string>{"detectors.b"});
}

}  // namespace
