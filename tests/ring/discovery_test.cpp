// Ingest's discovery and bookkeeping (issue 10 items 7 and 9, issue 11): segments are found by
// inotify, the gauges count the files that exist now, refused segments whose producer is dead are
// removed (and only those), and read positions saved in the state directory make a restarted
// agent resume without counting a record twice.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "mltap/naming.hpp"
#include "ingest_support.hpp"

namespace mltap::test {
namespace {

using namespace std::chrono_literals;

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

void write_rows(Stream& s, int n) {
  for (int i = 0; i < n; ++i) {
    const float v[1] = {static_cast<float>(i)};
    ASSERT_EQ(s.write(std::span<const float>(v)), WriteResult::written);
  }
}

TEST(Discovery, TheRejectedGaugeCountsOnlyFilesThatStillExist) {
  TempShmDir dir;
  const std::string ns = "disc1";
  std::mt19937 rng(7);
  std::vector<std::string> junk;
  for (int i = 0; i < 40; ++i) {
    std::string bytes(3 * 4096, '\0');
    for (auto& b : bytes) b = static_cast<char>(rng());
    junk.push_back(dir.path() + "/" + naming::segment_file_name(ns, 4000000 + i, 0));
    write_file(junk.back(), bytes);
  }
  ingest::Ingest in(config_for(dir, ns));
  in.run_once();
  EXPECT_EQ(in.snapshot()->segments_rejected, 40u);
  EXPECT_EQ(in.snapshot()->rejected_total.at("bad_magic"), 40u);
  for (std::size_t i = 0; i < 30; ++i) ASSERT_EQ(::unlink(junk[i].c_str()), 0);
  in.run_once();
  EXPECT_EQ(in.snapshot()->segments_rejected, 10u) << "unlinked files leave the gauge";
  for (std::size_t i = 30; i < junk.size(); ++i) ASSERT_EQ(::unlink(junk[i].c_str()), 0);
  in.run_once();
  EXPECT_EQ(in.snapshot()->segments_rejected, 0u);
  EXPECT_EQ(in.snapshot()->rejected_total.at("bad_magic"), 40u) << "the counter stays";
  // A file rewritten under a refused name is looked at again (IN_CLOSE_WRITE), and counted again.
  write_file(junk[0], std::string(3 * 4096, 'x'));
  in.run_once();
  EXPECT_EQ(in.snapshot()->segments_rejected, 1u);
  EXPECT_EQ(in.snapshot()->rejected_total.at("bad_magic"), 41u);
}

TEST(Discovery, ANewSegmentIsFoundByInotifyWithoutAFullRescan) {
  TempShmDir dir;
  const std::string ns = "disc2";
  auto c = config_for(dir, ns);
  c.scan_interval = 20ms;
  c.rescan_interval = std::chrono::hours(1);  // only the first listing: the rest is inotify
  ingest::Ingest in(c);
  in.start();
  std::this_thread::sleep_for(100ms);  // the first scan (and its listing) is done
  Stream s("t/new", one_lane(dir, ns));
  write_rows(s, 5);
  const auto t0 = std::chrono::steady_clock::now();
  const core::StreamSnapshot* st = nullptr;
  std::shared_ptr<const core::IngestSnapshot> snap;
  while (std::chrono::steady_clock::now() - t0 < 5s) {
    snap = in.fresh_snapshot(500ms);
    st = find_stream(*snap, "t/new");
    if (st && st->records_total == 5) break;
    std::this_thread::sleep_for(10ms);
  }
  in.stop();
  ASSERT_NE(st, nullptr) << "not found within 5 s with the full rescan an hour away";
  EXPECT_EQ(st->records_total, 5u);
}

TEST(Discovery, IdleSegmentsAreStillReadWhenTheyWakeUp) {
  TempShmDir dir;
  const std::string ns = "disc3";
  auto c = config_for(dir, ns);
  c.idle_poll_interval = 20ms;
  ingest::Ingest in(c);
  std::vector<std::unique_ptr<Stream>> streams;
  for (int i = 0; i < 20; ++i) streams.push_back(std::make_unique<Stream>("t/idle", one_lane(dir, ns)));
  in.start();
  std::this_thread::sleep_for(1500ms);  // all idle by now (no record for a second)
  for (auto& s : streams) write_rows(*s, 3);
  const auto t0 = std::chrono::steady_clock::now();
  std::uint64_t records = 0;
  while (std::chrono::steady_clock::now() - t0 < 5s && records < 60) {
    auto snap = in.fresh_snapshot(500ms);
    if (const auto* st = find_stream(*snap, "t/idle")) records = st->records_total;
    std::this_thread::sleep_for(10ms);
  }
  in.stop();
  EXPECT_EQ(records, 60u);
}

TEST(RefusedSegments, OnlyThoseOfADeadProducerOwnedByItsUidAreRemoved) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown)";
  TempShmDir dir;
  const std::string ns = "disc4";
  // A real producer; its stream will belong to uid 65534 first, so the agent refuses it as
  // stream_owner while it runs (verified), then it is SIGKILLed.
  Helper h = start_helper(dir.path(), ns, "t/refused");
  ASSERT_GT(h.pid, 0);
  ASSERT_FALSE(h.segment.empty());
  const std::string bytes = read_file(h.segment);
  // Copies naming the same (soon dead) producer: one owned by another uid than the header says
  // (someone's forgery: not removed), one claiming another pid namespace (liveness unknown).
  const std::string forged = dir.path() + "/" + naming::segment_file_name(ns, h.pid, 900);
  write_file(forged, bytes);
  ASSERT_EQ(::chown(forged.c_str(), 65534, 65534), 0);
  std::string foreign_bytes = bytes;
  reinterpret_cast<format::SegmentHeader*>(foreign_bytes.data())->pid_ns_inode = 77;
  const std::string foreign = dir.path() + "/" + naming::segment_file_name(ns, h.pid, 901);
  write_file(foreign, foreign_bytes);

  auto c = config_for(dir, ns);
  c.dead_producer_grace = 0ns;
  c.stream_owners = {{"t/refused", {65534}}};  // the live producer (root) is refused: stream_owner
  ingest::Ingest in(c);
  in.run_once();
  auto snap = in.snapshot();
  EXPECT_EQ(snap->unverified_total.at("stream_owner"), 1u);
  EXPECT_EQ(snap->segments_rejected, 3u);
  EXPECT_TRUE(exists(h.segment)) << "its producer runs: kept";

  ::kill(h.pid, SIGKILL);
  ::waitpid(h.pid, nullptr, 0);
  // Liveness of a refused file's producer is checked with backoff (1 s first).
  const auto t0 = std::chrono::steady_clock::now();
  while (exists(h.segment) && std::chrono::steady_clock::now() - t0 < 5s) {
    std::this_thread::sleep_for(100ms);
    in.run_once();
  }
  EXPECT_FALSE(exists(h.segment)) << "refused, producer dead, owned by the header's uid: removed";
  EXPECT_TRUE(exists(forged)) << "owner differs from the header's uid: not the agent's to remove";
  EXPECT_TRUE(exists(foreign)) << "another pid namespace: liveness unknown, kept";
  snap = in.snapshot();
  EXPECT_EQ(snap->removed_total.at("refused_dead"), 1u);
  EXPECT_EQ(snap->segments_rejected, 2u) << "the gauge counts the two files left";
}

TEST(RefusedSegments, ASymlinkIsNeverRemovedNorFollowed) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  TempShmDir dir;
  const std::string ns = "disc5";
  const std::string target = dir.path() + "/precious";
  write_file(target, "keep me");
  const std::string link = dir.path() + "/" + naming::segment_file_name(ns, 4100000, 0);
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  auto c = config_for(dir, ns);
  c.dead_producer_grace = 0ns;
  ingest::Ingest in(c);
  in.run_once();
  in.run_once();
  EXPECT_TRUE(exists(link));
  EXPECT_EQ(read_file(target), "keep me");
}

TEST(ReadPositions, ARestartedIngestResumesWithoutCountingTwice) {
  TempShmDir dir;
  const std::string ns = "disc6";
  Stream s("t/pos", one_lane(dir, ns));
  write_rows(s, 100);
  std::vector<core::StateDocument> docs;
  {
    ingest::Ingest first(config_for(dir, ns));
    first.run_once();
    const auto* st = find_stream(*first.snapshot(), "t/pos");
    ASSERT_NE(st, nullptr);
    EXPECT_EQ(st->records_total, 100u);
    docs = first.checkpoint();
    ASSERT_EQ(docs.size(), 1u);
    EXPECT_TRUE(first.checkpoint().empty()) << "nothing changed: nothing to write";
    // The document is written by hand (Ingest::checkpoint): it must be JSON with the fields
    // restore() and older agents read.
    const auto doc = nlohmann::json::parse(docs[0].data);
    ASSERT_EQ(doc.at("streams").size(), 1u);
    EXPECT_EQ(doc["streams"][0].at("name"), "t/pos");
    EXPECT_EQ(doc["streams"][0].at("records"), 100u);
    EXPECT_EQ(doc["streams"][0].at("dropped").size(), st->dropped.size());
    ASSERT_EQ(doc.at("segments").size(), 1u);
    EXPECT_EQ(doc["segments"][0].at("lanes").size(), 1u);
    EXPECT_EQ(doc["segments"][0].at("counters").size(), 6u);
    EXPECT_EQ(doc["segments"][0].at("counters")[0], 100u) << "rows_written";
  }
  write_rows(s, 50);  // written while no agent ran
  std::vector<std::pair<std::string, core::StateReadResult>> stored;
  core::StateReadResult r;
  r.status = core::StateReadResult::Status::ok;
  r.version = docs[0].version;
  r.data = docs[0].data;
  stored.emplace_back(docs[0].name, r);
  {
    ingest::Ingest second(config_for(dir, ns));
    EXPECT_TRUE(second.restore(stored).empty());
    second.run_once();
    const auto* st = find_stream(*second.snapshot(), "t/pos");
    ASSERT_NE(st, nullptr);
    EXPECT_EQ(st->records_total, 150u) << "100 restored + the 50 new, none read twice";
    EXPECT_EQ(st->writes_total, 150u);
  }
  {
    // Without the document: the ring is read again from its start (the old behaviour).
    ingest::Ingest fresh(config_for(dir, ns));
    fresh.run_once();
    EXPECT_EQ(find_stream(*fresh.snapshot(), "t/pos")->records_total, 150u);
  }
  {
    // A position saved for another segment (another creation) is not used for this one.
    std::string data = r.data;
    const auto at = data.find("\"created_unix_ns\":");
    ASSERT_NE(at, std::string::npos);
    data.insert(at + 18, "1");
    stored[0].second.data = data;
    ingest::Ingest other(config_for(dir, ns));
    EXPECT_TRUE(other.restore(stored).empty());
    other.run_once();
    EXPECT_EQ(find_stream(*other.snapshot(), "t/pos")->records_total, 100u + 150u)
        << "counters continue from the saved 100, the ring is read from its start";
  }
}

// IngestConfig::read_delay: a hot segment whose backlog is small waits for the delay (here far
// longer than the test), one whose backlog reached a quarter of its ring is read at the next
// poll, and a fresh snapshot reads whatever was committed before it was asked for.
TEST(Discovery, AHotSegmentIsReadAfterReadDelayOrOnceAQuarterOfItsRingFilled) {
  TempShmDir dir;
  const std::string ns = "disc7";
  auto c = config_for(dir, ns);
  c.scan_interval = 20ms;
  c.snapshot_interval = 10ms;
  c.read_delay = 60s;
  ingest::Ingest in(c);
  Stream s("t/paced", one_lane(dir, ns));
  const auto records = [&]() -> std::uint64_t {
    const auto snap = in.snapshot();  // held while its stream is read
    const auto* st = find_stream(*snap, "t/paced");
    return st ? st->records_total : 0;
  };
  const auto wait_for = [&](std::uint64_t n) {
    const auto t0 = std::chrono::steady_clock::now();
    while (records() < n && std::chrono::steady_clock::now() - t0 < 10s) std::this_thread::sleep_for(2ms);
    return records();
  };
  write_rows(s, 1);
  in.start();
  ASSERT_EQ(wait_for(1), 1u) << "a new segment is read at once";
  write_rows(s, 1);  // one small record: waits for read_delay
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(records(), 1u) << "read before read_delay with a small backlog";
  // 5,000 float rows: a record of 20 KB, more than a quarter of the 64 KiB ring.
  std::vector<float> big(5000, 1.0f);
  ASSERT_EQ(s.write_batch(big.data(), big.size(), 1), WriteResult::written);
  EXPECT_EQ(wait_for(5002), 5002u) << "a quarter of the ring filled: read without waiting for read_delay";
  write_rows(s, 3);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(records(), 5002u);
  const auto fresh = in.fresh_snapshot(5000ms);
  const auto* st = find_stream(*fresh, "t/paced");
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->records_total, 5005u) << "a fresh snapshot reads what is committed first";
  in.stop();
}

}  // namespace
}  // namespace mltap::test
