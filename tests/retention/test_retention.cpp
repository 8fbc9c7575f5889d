#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "agent/retention/config.hpp"
#include "agent/retention/review.hpp"
#include "agent/retention/store.hpp"

namespace fs = std::filesystem;
using namespace mltap;
using retention::RetentionConfig;
using retention::RetentionStore;

namespace {

constexpr std::uint64_t kSec = 1'000'000'000ull;
constexpr std::uint64_t kT0 = 1'700'000'000ull * kSec;  // a minute boundary

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/mltap-retention-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

core::StreamInfo info(const std::string& name, std::vector<std::string> features,
                      format::StreamKind kind = format::StreamKind::features) {
  core::StreamInfo s;
  s.name = name;
  s.component = "c-" + name;
  s.kind = kind;
  s.feature_names = std::move(features);
  return s;
}

// One batch: `ids` (empty: rows without trace ids, `rows` of them), values from `value(id, col)`.
void feed(RetentionStore& store, const core::StreamInfo& s, std::uint64_t ts,
          const std::vector<std::uint64_t>& ids, std::size_t cols,
          const std::function<double(std::uint64_t, std::size_t)>& value, std::size_t rows = 0) {
  const std::size_t n = ids.empty() ? rows : ids.size();
  std::vector<double> v(n * cols);
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t c = 0; c < cols; ++c) v[r * cols + c] = value(ids.empty() ? r : ids[r], c);
  core::DecodedBatch b;
  b.stream = &s;
  b.timestamp_ns = ts;
  b.rows = n;
  b.cols = cols;
  b.values = v;
  b.trace_ids = ids;
  store.on_batch(b);
}

std::vector<std::uint64_t> range(std::uint64_t first, std::uint64_t n) {
  std::vector<std::uint64_t> out(n);
  for (std::uint64_t i = 0; i < n; ++i) out[i] = first + i;
  return out;
}

std::uint64_t dropped(const core::RetentionStats& s, core::RetentionDrop d) {
  return s.dropped[static_cast<std::size_t>(d)];
}

// Plain splitmix64 (Steele, Lea, Flood 2014), written out again: the oracle of the sampling hash.
std::uint64_t splitmix64_first(std::uint64_t state) {
  std::uint64_t z = state + 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::set<std::uint64_t> retained_ids(const RetentionStore& store, const std::string& stream) {
  std::set<std::uint64_t> out;
  store.read().for_each(stream, 0, ~0ull, [&](const retention::RetainedRow& r) {
    if (r.has_trace_id) out.insert(r.trace_id);
  });
  return out;
}

}  // namespace

TEST(RetentionHash, IsSplitmix64AsTheProducersUseIt) {
  EXPECT_EQ(format::trace_id_hash(0), 0xE220A8397B1DCDAFULL);  // splitmix64's first output, seed 0
  for (std::uint64_t x : {1ull, 42ull, 0xFFFFFFFFFFFFFFFFull, 123456789ull})
    EXPECT_EQ(format::trace_id_hash(x), splitmix64_first(x));
}

TEST(RetentionStore, SameIdsRetainedInEveryStreamAndExactlyThoseUnderTheShare) {
  RetentionConfig cfg;
  cfg.keep_share = 0.3;
  RetentionStore store(cfg, "", kT0);
  const auto a = info("lin/a", {"x"}), b = info("lin/b", {"y", "z"});
  const auto ids = range(1, 5000);
  feed(store, a, kT0, ids, 1, [](auto id, auto) { return double(id); });
  // The second stream sees the ids in another order and batching.
  std::vector<std::uint64_t> rev(ids.rbegin(), ids.rend());
  for (std::size_t i = 0; i < rev.size(); i += 7) {
    std::vector<std::uint64_t> part(rev.begin() + i, rev.begin() + std::min(rev.size(), i + 7));
    feed(store, b, kT0 + kSec, part, 2, [](auto id, auto c) { return double(id * 10 + c); });
  }
  std::set<std::uint64_t> expected;
  const auto threshold = static_cast<std::uint64_t>(std::ldexp(0.3, 64));
  for (auto id : ids)
    if (splitmix64_first(id) <= threshold) expected.insert(id);
  EXPECT_GT(expected.size(), 1300u);
  EXPECT_LT(expected.size(), 1700u);
  EXPECT_EQ(retained_ids(store, "lin/a"), expected);
  EXPECT_EQ(retained_ids(store, "lin/b"), expected);
  const auto st = store.stats();
  EXPECT_EQ(st.sampled_out, 2 * (ids.size() - expected.size()));
  const auto row = store.read().find("lin/b", *expected.begin());
  ASSERT_TRUE(row);
  ASSERT_EQ(row->values.size(), 2u);
  EXPECT_EQ(row->values[1], double(*expected.begin() * 10 + 1));
}

TEST(RetentionStore, StreamCapEvictsOldestBucketFirstAndCounts) {
  TempDir dir;
  RetentionConfig cfg;
  cfg.max_stream_bytes = 64 << 10;  // about 1,200 rows of 2 values (16 + 32 + 16 bytes each)
  RetentionStore store(cfg, dir.path, kT0);
  const auto s = info("cap/s", {"a", "b"});
  for (std::uint64_t m = 0; m < 10; ++m)  // 10 one-minute buckets of 300 rows
    feed(store, s, kT0 + m * 60 * kSec, range(m * 1000, 300), 2,
         [](auto id, auto) { return double(id); });
  const auto st = store.stats();
  ASSERT_EQ(st.streams.size(), 1u);
  EXPECT_LE(st.streams[0].bytes, cfg.max_stream_bytes);
  const std::uint64_t kept = st.streams[0].records;
  EXPECT_EQ(kept + dropped(st, core::RetentionDrop::stream_cap), 3000u);
  EXPECT_EQ(kept % 300, 0u);  // whole buckets left, never part of one
  const auto ids = retained_ids(store, "cap/s");
  // The newest buckets are the ones kept.
  const std::uint64_t buckets_kept = kept / 300;
  EXPECT_EQ(*ids.begin(), (10 - buckets_kept) * 1000);
  EXPECT_TRUE(ids.count(9 * 1000 + 299));
  EXPECT_FALSE(store.read().find("cap/s", 0));
  // The evicted buckets' files are gone; the others are there.
  std::size_t files = 0;
  for (const auto& d : fs::directory_iterator(dir.path + "/retention"))
    if (d.is_directory())
      files += std::distance(fs::directory_iterator(d), fs::directory_iterator());
  EXPECT_EQ(files, buckets_kept);
}

TEST(RetentionStore, TotalCapEvictsTheOldestBucketOfAnyStream) {
  RetentionConfig cfg;
  cfg.max_bytes = 64 << 10;
  RetentionStore store(cfg, "", kT0);
  const auto old_stream = info("t/old", {"a"}), new_stream = info("t/new", {"a"});
  feed(store, old_stream, kT0, range(1, 400), 1, [](auto, auto) { return 1.0; });
  feed(store, new_stream, kT0 + 60 * kSec, range(1, 400), 1, [](auto, auto) { return 1.0; });
  // More rows of the old stream in a newer bucket: the oldest bucket overall (t/old's first) goes.
  feed(store, old_stream, kT0 + 120 * kSec, range(1000, 600), 1, [](auto, auto) { return 1.0; });
  const auto st = store.stats();
  EXPECT_LE(st.bytes, cfg.max_bytes);
  EXPECT_EQ(dropped(st, core::RetentionDrop::total_cap), 400u);
  EXPECT_FALSE(store.read().find("t/old", 1));
  EXPECT_TRUE(store.read().find("t/new", 1));
  EXPECT_TRUE(store.read().find("t/old", 1000));
}

TEST(RetentionStore, ReservoirKeepsABoundedUniformSampleOfRowsWithoutIds) {
  RetentionConfig cfg;
  cfg.reservoir = 100;
  RetentionStore store(cfg, "", kT0);
  const auto s = info("r/s", {"i"});
  for (int k = 0; k < 100; ++k)
    feed(
        store, s, kT0 + k * 100'000'000ull, {}, 1,
        [k](auto r, auto) { return double(k * 100 + r); }, 100);
  std::vector<double> kept;
  store.read().for_each("r/s", 0, ~0ull, [&](const auto& r) { kept.push_back(r.values[0]); });
  ASSERT_EQ(kept.size(), 100u);
  EXPECT_EQ(store.stats().records, 100u);
  EXPECT_EQ(dropped(store.stats(), core::RetentionDrop::reservoir), 9900u);
  // Uniform over the 10,000 rows: the mean of the kept index is near 5,000 (sd of the mean ~290).
  double mean = 0;
  for (double v : kept) mean += v / kept.size();
  EXPECT_NEAR(mean, 5000, 1200);
  EXPECT_EQ(std::set<double>(kept.begin(), kept.end()).size(), 100u);
}

// Regression (bench/soak): rows the reservoir replaced stayed in memory (only their `live` flag
// cleared), so a busy bucket held ~reservoir * (1 + ln(n / reservoir)) rows and mltapd's heap
// grew with the rows offered, ~5x what the live rows need, until the byte caps stopped it. A
// replaced row is overwritten in place: memory does not depend on how many rows were offered,
// and a restart (which replays every frame of the file, replaced rows included) rebuilds the
// same rows.
TEST(RetentionStore, ReservoirMemoryDoesNotGrowWithRowsOffered) {
  TempDir dir;
  RetentionConfig cfg;
  cfg.reservoir = 100;
  const auto s = info("m/s", {"a", "b", "c", "d"});
  auto kept = [](const RetentionStore& store) {
    std::multiset<std::vector<double>> out;
    store.read().for_each("m/s", 0, ~0ull, [&](const auto& r) {
      out.insert(std::vector<double>(r.values.begin(), r.values.end()));
    });
    return out;
  };
  std::multiset<std::vector<double>> before;
  {
    RetentionStore store(cfg, dir.path, kT0);
    std::uint64_t memory_at_1000 = 0;
    for (int k = 0; k < 100; ++k) {
      feed(
          store, s, kT0 + k * 100'000'000ull, {}, 4,
          [k](auto r, auto c) { return double(k * 1000 + r) + 0.25 * c; }, 1000);
      if (k == 0) memory_at_1000 = store.stats().memory_bytes;
    }
    const auto st = store.stats();
    EXPECT_EQ(st.records, 100u);
    EXPECT_EQ(dropped(st, core::RetentionDrop::reservoir), 100'000u - 100u);
    // 100 rows of 4 values: 100 * (row header + 32 B), with the vectors' growth slack (< 2x).
    EXPECT_GT(st.memory_bytes, 0u);
    EXPECT_LE(st.memory_bytes, 2 * 100 * (24 + 4 * sizeof(double) + sizeof(std::uint32_t)));
    // 1,000 rows offered or 100,000: the same memory (the old code held ~560 rows vs ~790).
    EXPECT_EQ(st.memory_bytes, memory_at_1000);
    // The file still has every frame written (replaced rows included): the disk cap counts them.
    EXPECT_GT(st.bytes, 500u * (32 + 4 * sizeof(double)));
    before = kept(store);
    ASSERT_EQ(before.size(), 100u);
  }
  {
    RetentionStore again(cfg, dir.path, kT0);
    EXPECT_EQ(again.stats().records, 100u);
    EXPECT_EQ(kept(again), before);
    EXPECT_LE(again.stats().memory_bytes, 2 * 100 * (24 + 4 * sizeof(double) + sizeof(std::uint32_t)));
    // Rows added to the replayed bucket after the restart reach its file (the replay once
    // counted every frame as a row written, replaced ones included, so these were skipped).
    feed(again, s, kT0 + 20 * kSec, range(1, 10), 4, [](auto r, auto c) { return double(r) + c; });
    EXPECT_EQ(retained_ids(again, "m/s").size(), 10u);
  }
  RetentionStore third(cfg, dir.path, kT0);
  EXPECT_EQ(retained_ids(third, "m/s"), std::set<std::uint64_t>({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(third.stats().records, 110u);
  EXPECT_EQ(kept(third).size(), 110u);
}

TEST(RetentionStore, ReservoirRowsReplacedByRowsOfAnotherWidthSurviveARestart) {
  TempDir dir;
  RetentionConfig cfg;
  cfg.reservoir = 10;
  std::multiset<std::vector<double>> before;
  auto kept = [](const RetentionStore& store) {
    std::multiset<std::vector<double>> out;
    store.read().for_each("w/s", 0, ~0ull, [&](const auto& r) {
      out.insert(std::vector<double>(r.values.begin(), r.values.end()));
    });
    return out;
  };
  {
    RetentionStore store(cfg, dir.path, kT0);
    // The stream's schema changes within the bucket: 4 values a row, then 2.
    feed(store, info("w/s", {"a", "b", "c", "d"}), kT0, {}, 4, [](auto r, auto c) { return double(r) + c; }, 10);
    feed(store, info("w/s", {"a", "b"}), kT0 + kSec, {}, 2, [](auto r, auto c) { return 100.0 + r + c; }, 1000);
    EXPECT_EQ(store.stats().records, 10u);
    before = kept(store);
  }
  RetentionStore again(cfg, dir.path, kT0);
  EXPECT_EQ(again.stats().records, 10u);
  EXPECT_EQ(kept(again), before);
}

TEST(RetentionStore, WithoutAStateDirectoryReplacedRowsAreNotCountedAgainstTheCaps) {
  RetentionConfig cfg;
  cfg.reservoir = 100;
  RetentionStore store(cfg, "", kT0);
  const auto s = info("m/s", {"a", "b", "c", "d"});
  feed(store, s, kT0, {}, 4, [](auto r, auto c) { return double(r) + c; }, 1000);
  const auto held = store.stats().bytes;
  EXPECT_GT(held, 0u);
  feed(store, s, kT0 + kSec, {}, 4, [](auto r, auto c) { return double(r) + c; }, 100'000);
  // Memory holds the 100 rows of the reservoir whatever was offered: so do the counted bytes.
  EXPECT_EQ(store.stats().records, 100u);
  EXPECT_EQ(store.stats().bytes, held);
}

TEST(RetentionStore, MaxAgeDropsOldRowsAndAgesBucketsOut) {
  RetentionConfig cfg;
  cfg.max_age = std::chrono::minutes(10);
  RetentionStore store(cfg, "", kT0 + 3600 * kSec);
  const auto s = info("a/s", {"v"});
  feed(store, s, kT0, range(1, 10), 1, [](auto, auto) { return 0.0; });  // an hour old
  EXPECT_EQ(dropped(store.stats(), core::RetentionDrop::max_age), 10u);
  feed(store, s, kT0 + 3600 * kSec, range(11, 10), 1, [](auto, auto) { return 0.0; });
  EXPECT_EQ(store.stats().records, 10u);
  store.on_tick(kT0 + 3600 * kSec + 12 * 60 * kSec);
  EXPECT_EQ(store.stats().records, 0u);
  EXPECT_EQ(dropped(store.stats(), core::RetentionDrop::max_age), 20u);
}

TEST(RetentionStore, RestartReopensEveryRowIndexAndFlag) {
  TempDir dir;
  RetentionConfig cfg;
  cfg.reservoir = 5;
  const auto s = info("re/s", {"a", "b"});
  {
    RetentionStore store(cfg, dir.path, kT0);
    for (int m = 0; m < 3; ++m)
      feed(store, s, kT0 + m * 60 * kSec, range(m * 100, 50), 2,
           [](auto id, auto c) { return id + 0.5 * c; });
    feed(
        store, s, kT0, {}, 2, [](auto r, auto) { return -double(r); }, 40);  // reservoir of 5
    const std::vector<std::uint64_t> f{7, 8};
    EXPECT_EQ(store.flag("re/p", f, kT0).added, 2u);
  }
  RetentionStore again(cfg, dir.path, kT0);
  const auto st = again.stats();
  EXPECT_TRUE(st.persistent);
  EXPECT_EQ(st.records, 150u + 5u);
  EXPECT_EQ(st.torn_bytes, 0u);
  EXPECT_EQ(st.flagged, 2u);
  const auto v = again.read();
  const auto row = v.find("re/s", 249);
  ASSERT_TRUE(row);
  EXPECT_EQ(row->values[1], 249.5);
  EXPECT_EQ(row->timestamp_ns, kT0 + 120 * kSec);
  EXPECT_TRUE(v.flagged("re/p", 8));
  EXPECT_FALSE(v.flagged("re/p", 9));
  ASSERT_NE(v.meta("re/s"), nullptr);
  EXPECT_EQ(v.meta("re/s")->feature_names, (std::vector<std::string>{"a", "b"}));
  std::size_t no_id = 0;
  v.for_each("re/s", 0, ~0ull, [&](const auto& r) { no_id += r.has_trace_id ? 0 : 1; });
  EXPECT_EQ(no_id, 5u);
}

TEST(RetentionStore, TornTailIsCutAndLaterAppendsSurviveTheNextRestart) {
  TempDir dir;
  RetentionConfig cfg;
  const auto s = info("torn/s", {"v"});
  std::string file;
  {
    RetentionStore store(cfg, dir.path, kT0);
    feed(store, s, kT0, range(1, 100), 1, [](auto id, auto) { return double(id); });
  }
  for (const auto& d : fs::recursive_directory_iterator(dir.path))
    if (d.path().extension() == ".rlog" && d.path().filename() != "flags.rlog") file = d.path();
  ASSERT_FALSE(file.empty());
  const auto good = fs::file_size(file);
  {  // half a frame, as a kill in the middle of a write would leave it... and a bad CRC
    std::ofstream out(file, std::ios::app | std::ios::binary);
    const char junk[24] = {'M', 'T', 'R', 'T', 2, 0, 0, 0, 40, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9};
    out.write(junk, sizeof junk);
  }
  {
    RetentionStore store(cfg, dir.path, kT0);
    EXPECT_EQ(store.stats().records, 100u);
    EXPECT_EQ(store.stats().torn_bytes, 24u);
    EXPECT_EQ(fs::file_size(file), good);
    feed(store, s, kT0 + kSec, range(101, 10), 1, [](auto id, auto) { return double(id); });
  }
  RetentionStore store(cfg, dir.path, kT0);
  EXPECT_EQ(store.stats().records, 110u);
  EXPECT_EQ(store.stats().torn_bytes, 0u);
  EXPECT_EQ(store.read().find("torn/s", 110)->values[0], 110.0);
}

// ---- a full or read-only state directory (real tmpfs and bind mounts: root, else skipped) ----

// A small tmpfs on a fresh directory, unmounted (lazily) at the end.
struct SmallFs {
  TempDir dir;
  bool mounted = false;
  bool read_only = false;
  explicit SmallFs(const char* size) {
    const std::string opts = std::string("size=") + size + ",mode=0700";
    mounted = ::mount("tmpfs", dir.path.c_str(), "tmpfs", 0, opts.c_str()) == 0;
  }
  ~SmallFs() {
    if (read_only) ::umount2(dir.path.c_str(), MNT_DETACH);
    if (mounted) ::umount2(dir.path.c_str(), MNT_DETACH);
  }
  // Fills it to the last byte with `.filler`; returns its path.
  std::string fill() const {
    const std::string path = dir.path + "/.filler";
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    const std::vector<char> chunk(4096, 'f');
    while (::write(fd, chunk.data(), chunk.size()) > 0) {
    }
    while (::write(fd, chunk.data(), 1) > 0) {
    }
    ::close(fd);
    return path;
  }
  // Read-only without closing anyone's files: a read-only bind mount of the directory over itself
  // (what open files were opened through stays writable, as the kernel has it).
  bool make_read_only() {
    read_only = ::mount(dir.path.c_str(), dir.path.c_str(), nullptr, MS_BIND, nullptr) == 0 &&
                ::mount(nullptr, dir.path.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY,
                        nullptr) == 0;
    return read_only;
  }
  void make_writable() {
    ASSERT_EQ(::umount2(dir.path.c_str(), 0), 0) << std::strerror(errno);
    read_only = false;
  }
};

// Rows of the fault tests: value = id * 2 + column.
double value(std::uint64_t id, std::size_t column) { return id * 2.0 + double(column); }

std::uint64_t write_failures(const core::RetentionStats& s, core::RetentionWriteError e) {
  return s.write_failures[static_cast<std::size_t>(e)];
}

std::multiset<double> rows_without_id(const RetentionStore& store, const std::string& stream) {
  std::multiset<double> out;
  store.read().for_each(stream, 0, ~0ull, [&](const retention::RetainedRow& r) {
    if (!r.has_trace_id) out.insert(r.values[0]);
  });
  return out;
}

// Every row reopened from `dir` is whole and right (value = id * 2 + column for rows with ids).
void expect_rows_right(const RetentionStore& store, const std::string& stream) {
  bool right = true;
  store.read().for_each(stream, 0, ~0ull, [&](const retention::RetainedRow& r) {
    right = right && r.values.size() == 2 &&
            (!r.has_trace_id || (r.values[0] == r.trace_id * 2.0 && r.values[1] == r.values[0] + 1));
  });
  EXPECT_TRUE(right);
}

TEST(RetentionStoreFaults, FullDiskHoldsRowsInMemoryAndWritesThemInOrderWhenSpaceReturns) {
  SmallFs fs("256k");
  if (!fs.mounted) GTEST_SKIP() << "cannot mount a tmpfs (needs root)";
  RetentionConfig cfg;
  cfg.reservoir = 8;
  const auto s = info("full/s", {"a", "b"});
  const auto no_id = [](auto r, auto c) { return 1e6 + double(r) * 2 + double(c); };
  std::multiset<double> reservoir;
  std::uint64_t fed = 0;
  {
    RetentionStore store(cfg, fs.dir.path, kT0);
    feed(store, s, kT0, range(0, 200), 2, value);  // written while there is room
    const std::string filler = fs.fill();
    // Full: rows with ids in two new buckets, reservoir rows (slots replaced). (Not the open
    // bucket: its file's last page may still take a few rows.)
    for (std::uint64_t i = 200; i < 2000; i += 100)
      feed(store, s, kT0 + (i < 1000 ? 60 : 120) * kSec, range(i, 100), 2, value);
    for (int k = 0; k < 4; ++k) feed(store, s, kT0 + 120 * kSec, {}, 2, no_id, 25);
    fed = 2000 + 8;
    const std::vector<std::uint64_t> flags{5, 6};
    EXPECT_EQ(store.flag("full/p", flags, kT0).added, 2u);
    auto st = store.stats();
    EXPECT_TRUE(st.write_failing);
    EXPECT_GT(st.unwritten_bytes, 1800u * 48);
    // Every row held (the reservoir's replaced ones too), none written.
    EXPECT_GE(dropped(st, core::RetentionDrop::write_error), 1800u + 8u);
    EXPECT_LE(dropped(st, core::RetentionDrop::write_error), 1800u + 100u);
    const auto held = dropped(st, core::RetentionDrop::write_error);
    // One failed write per attempt, not per row: each new bucket, the flag.
    EXPECT_GE(write_failures(st, core::RetentionWriteError::no_space), 2u);
    EXPECT_LE(write_failures(st, core::RetentionWriteError::no_space), 4u);
    EXPECT_EQ(st.records, fed);
    // Queries answer from memory meanwhile.
    ASSERT_TRUE(store.read().find("full/s", 1999));
    EXPECT_EQ(store.read().find("full/s", 1999)->values[1], 1999 * 2.0 + 1);
    reservoir = rows_without_id(store, "full/s");
    EXPECT_EQ(reservoir.size(), 8u);
    // Still full at the next tick: one more failed write, nothing else changes.
    store.on_tick(kT0 + 2 * kSec);
    st = store.stats();
    EXPECT_TRUE(st.write_failing);
    EXPECT_LE(write_failures(st, core::RetentionWriteError::no_space), 5u);
    {  // a restart now would load the prefix that was written, and nothing torn
      RetentionStore meanwhile(cfg, fs.dir.path, kT0);
      EXPECT_EQ(meanwhile.stats().records, 200u);
      EXPECT_EQ(meanwhile.stats().torn_bytes, 0u);
      EXPECT_EQ(meanwhile.stats().flagged, 0u);
      expect_rows_right(meanwhile, "full/s");
    }
    // Space returns: the next tick writes what the files lack, in order.
    ASSERT_EQ(::unlink(filler.c_str()), 0);
    store.on_tick(kT0 + 2 * kSec + 200'000'000);  // within the second since the last attempt
    EXPECT_TRUE(store.stats().write_failing);
    store.on_tick(kT0 + 4 * kSec);
    st = store.stats();
    EXPECT_FALSE(st.write_failing);
    EXPECT_EQ(st.unwritten_bytes, 0u);
    // And rows arriving now go straight to their file.
    feed(store, s, kT0 + 120 * kSec, range(2000, 10), 2, value);
    EXPECT_EQ(dropped(store.stats(), core::RetentionDrop::write_error), held);
    EXPECT_EQ(store.stats().unwritten_bytes, 0u);
    fed += 10;
  }
  RetentionStore again(cfg, fs.dir.path, kT0);
  const auto st = again.stats();
  EXPECT_EQ(st.records, fed);
  EXPECT_EQ(st.torn_bytes, 0u);
  EXPECT_EQ(st.flagged, 2u);
  EXPECT_TRUE(again.read().flagged("full/p", 6));
  EXPECT_EQ(retained_ids(again, "full/s").size(), 2010u);
  EXPECT_EQ(rows_without_id(again, "full/s"), reservoir);  // the same reservoir, slot for slot
  expect_rows_right(again, "full/s");
}

TEST(RetentionStoreFaults, ReadOnlyDirectoryIsReadAtStartAndWrittenWhenWritableAgain) {
  SmallFs fs("1m");
  if (!fs.mounted) GTEST_SKIP() << "cannot mount a tmpfs (needs root)";
  RetentionConfig cfg;
  cfg.max_age = std::chrono::minutes(2);
  const auto s = info("ro/s", {"a", "b"});
  {
    RetentionStore store(cfg, fs.dir.path, kT0);
    feed(store, s, kT0, range(0, 100), 2, value);
    feed(store, s, kT0 + 60 * kSec, range(100, 100), 2, value);
    ASSERT_TRUE(fs.make_read_only()) << std::strerror(errno);
    // A new bucket's file cannot be created; flags neither; an aged-out bucket cannot be removed.
    feed(store, s, kT0 + 120 * kSec, range(200, 100), 2, value);
    feed(store, s, kT0 + 180 * kSec, range(300, 100), 2, value);
    const std::vector<std::uint64_t> flags{1};
    store.flag("ro/p", flags, kT0);
    auto st = store.stats();
    EXPECT_TRUE(st.write_failing);
    EXPECT_EQ(dropped(st, core::RetentionDrop::write_error), 200u);
    EXPECT_GE(write_failures(st, core::RetentionWriteError::read_only), 3u);
    EXPECT_LE(write_failures(st, core::RetentionWriteError::read_only), 4u);
    EXPECT_EQ(store.read().find("ro/s", 250)->values[0], 500.0);
    {  // mltapd restarted on the read-only directory still answers from what is there
      RetentionStore meanwhile(cfg, fs.dir.path, kT0);
      EXPECT_EQ(meanwhile.stats().records, 200u);
      EXPECT_TRUE(meanwhile.stats().persistent);
      EXPECT_EQ(meanwhile.read().find("ro/s", 99)->values[1], 199.0);
    }
    store.on_tick(kT0 + 170 * kSec);  // the first bucket ages out: its file stays for now
    EXPECT_EQ(dropped(store.stats(), core::RetentionDrop::max_age), 100u);
    fs.make_writable();
    store.on_tick(kT0 + 172 * kSec);
    st = store.stats();
    EXPECT_FALSE(st.write_failing);
    EXPECT_EQ(st.unwritten_bytes, 0u);
  }
  RetentionStore again(cfg, fs.dir.path, kT0);  // (the aged-out bucket would load at kT0)
  EXPECT_EQ(again.stats().records, 300u);
  EXPECT_FALSE(again.read().find("ro/s", 0));
  EXPECT_EQ(again.stats().flagged, 1u);
  EXPECT_EQ(again.stats().torn_bytes, 0u);
  expect_rows_right(again, "ro/s");
}

// A torn tail found on a read-only directory is left alone, then cut before the first append.
TEST(RetentionStoreFaults, TornTailOnAReadOnlyDirectoryIsCutOnceWritable) {
  SmallFs fs("1m");
  if (!fs.mounted) GTEST_SKIP() << "cannot mount a tmpfs (needs root)";
  RetentionConfig cfg;
  const auto s = info("rot/s", {"a", "b"});
  std::string file;
  {
    RetentionStore store(cfg, fs.dir.path, kT0);
    feed(store, s, kT0, range(0, 50), 2, value);
  }
  for (const auto& d : fs::recursive_directory_iterator(fs.dir.path))
    if (d.path().extension() == ".rlog" && d.path().filename() != "flags.rlog") file = d.path();
  ASSERT_FALSE(file.empty());
  const auto good = fs::file_size(file);
  {
    std::ofstream out(file, std::ios::app | std::ios::binary);
    out.write("MTRT\2\0\0\0", 8);  // half a header
  }
  ASSERT_TRUE(fs.make_read_only()) << std::strerror(errno);
  {
    RetentionStore store(cfg, fs.dir.path, kT0);
    EXPECT_EQ(store.stats().records, 50u);
    EXPECT_EQ(store.stats().torn_bytes, 8u);
    EXPECT_EQ(fs::file_size(file), good + 8);  // could not be cut
    feed(store, s, kT0 + kSec, range(50, 10), 2, value);
    EXPECT_TRUE(store.stats().write_failing);
    fs.make_writable();
    store.on_tick(kT0 + 2 * kSec);
    EXPECT_FALSE(store.stats().write_failing);
  }
  RetentionStore again(cfg, fs.dir.path, kT0);
  EXPECT_EQ(again.stats().records, 60u);
  EXPECT_EQ(again.stats().torn_bytes, 0u);
  expect_rows_right(again, "rot/s");
}

// mltap review on a full disk: the same answer from memory, after space returns, and after a restart.
TEST(RetentionStoreFaults, ReviewAnswersTheSameOnAFullDiskAndAfterARestart) {
  SmallFs fs("256k");
  if (!fs.mounted) GTEST_SKIP() << "cannot mount a tmpfs (needs root)";
  const auto feats = info("rv/features", {"amount", "age"});
  auto pred = info("rv/pred", {"score"}, format::StreamKind::predictions);
  pred.task = format::Task::binary;
  pred.labels_stream = "rv/labels";
  const auto labels = info("rv/labels", {"y"}, format::StreamKind::labels);
  const auto bugged = [](std::uint64_t id) { return id % 10 == 0; };
  const auto label = [](std::uint64_t id) { return id % 2 == 0 ? 1.0 : 0.0; };
  const auto feed_all = [&](RetentionStore& store, std::uint64_t first, std::uint64_t n,
                            std::uint64_t ts) {
    const auto ids = range(first, n);
    feed(store, feats, ts, ids, 2, [&](auto id, auto c) {
      return c == 0 ? (bugged(id) ? 5000.0 : 50.0 + double(id % 7)) : 30.0 + double(id % 11);
    });
    feed(store, pred, ts, ids, 1,
         [&](auto id, auto) { return (label(id) == 1.0) == !bugged(id) ? 0.9 : 0.1; });
    feed(store, labels, ts, ids, 1, [&](auto id, auto) { return label(id); });
  };
  retention::ReviewRequest rq;
  rq.stream = "rv/pred";
  const auto same = [](const retention::ReviewResult& a, const retention::ReviewResult& b) {
    EXPECT_EQ(a.predictions, b.predictions);
    EXPECT_EQ(a.wrong, b.wrong);
    EXPECT_EQ(a.correct, b.correct);
    ASSERT_FALSE(a.streams.empty());
    ASSERT_EQ(a.streams.size(), b.streams.size());
    EXPECT_EQ(a.streams[0].features[0].feature, b.streams[0].features[0].feature);
    EXPECT_DOUBLE_EQ(a.streams[0].features[0].auc, b.streams[0].features[0].auc);
  };
  retention::ReviewResult full;
  {
    RetentionStore store(RetentionConfig{}, fs.dir.path, kT0);
    feed_all(store, 1, 300, kT0);
    const std::string filler = fs.fill();
    feed_all(store, 301, 700, kT0 + 60 * kSec);  // new buckets: nothing of these is written
    ASSERT_TRUE(store.stats().write_failing);
    full = retention::review(store.read(), rq, nullptr);
    ASSERT_TRUE(full.error.empty()) << full.error;
    EXPECT_EQ(full.predictions, 1000u);
    EXPECT_EQ(full.wrong, 100u);
    EXPECT_EQ(full.streams[0].features[0].feature, "amount");
    ASSERT_EQ(::unlink(filler.c_str()), 0);
    store.on_tick(kT0 + 2 * kSec);
    ASSERT_FALSE(store.stats().write_failing);
    same(retention::review(store.read(), rq, nullptr), full);
  }
  RetentionStore again(RetentionConfig{}, fs.dir.path, kT0);
  same(retention::review(again.read(), rq, nullptr), full);
}

// A real kill -9 in the middle of writing: every row reopened is whole and right.
TEST(RetentionStore, KillNineWhileWritingLeavesOnlyWholeRows) {
  TempDir dir;
  RetentionConfig cfg;
  cfg.max_stream_bytes = 1ull << 30;
  const auto s = info("kill/s", {"a", "b", "c"});
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    RetentionStore store(cfg, dir.path, kT0);
    for (std::uint64_t i = 0;; i += 16) {
      feed(store, s, kT0 + i * 1000, range(i, 16), 3, [](auto id, auto c) { return id * 3.0 + c; });
      if (i == 16 * 200) (void)!::write(pipefd[1], "x", 1);  // enough written: kill me any time
    }
  }
  ::close(pipefd[1]);
  char c;
  ASSERT_EQ(::read(pipefd[0], &c, 1), 1);
  ::usleep(20'000);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(pipefd[0]);
  RetentionStore store(cfg, dir.path, kT0);
  const auto st = store.stats();
  EXPECT_GT(st.records, 16u * 200);
  std::uint64_t rows = 0, max_id = 0;
  bool all_right = true;
  store.read().for_each("kill/s", 0, ~0ull, [&](const auto& r) {
    ++rows;
    max_id = std::max(max_id, r.trace_id);
    all_right = all_right && r.values.size() == 3 && r.values[2] == r.trace_id * 3.0 + 2;
  });
  EXPECT_TRUE(all_right);
  EXPECT_EQ(rows, st.records);
  EXPECT_EQ(rows, max_id + 1);  // a prefix: no row lost before the last whole one
}

TEST(RetentionReview, MannWhitneyAucMatchesBruteForceWithTies) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<double> a(1 + rng() % 30), b(1 + rng() % 30);
    for (auto& x : a) x = double(rng() % 6);  // many ties
    for (auto& x : b) x = (rng() % 4 == 0) ? INFINITY : double(rng() % 5);
    double wins = 0;
    for (double x : a)
      for (double y : b) wins += x > y ? 1 : (x == y ? 0.5 : 0);
    const double expected = wins / (a.size() * b.size());
    auto a2 = a, b2 = b;
    EXPECT_NEAR(retention::mann_whitney_auc(a2, b2), expected, 1e-12);
  }
  std::vector<double> empty, one{1};
  EXPECT_TRUE(std::isnan(retention::mann_whitney_auc(empty, one)));
}

// cleaning -> features -> model, labels: a unit bug (x1000) in one feature for some ids makes the
// model wrong for exactly those; review ranks that feature of that stream first.
TEST(RetentionReview, RanksTheFeatureAbnormalForWrongIdsFirst) {
  RetentionStore store(RetentionConfig{}, "", kT0);
  auto clean = info("l/clean", {"raw_amount", "raw_age"});
  auto feats = info("l/features", {"amount", "age", "noisy"});
  auto pred = info("l/pred", {"score"}, format::StreamKind::predictions);
  pred.task = format::Task::binary;
  pred.labels_stream = "l/labels";
  auto labels = info("l/labels", {"y"}, format::StreamKind::labels);
  const auto ids = range(1, 2000);
  auto bugged = [](std::uint64_t id) { return id % 20 == 0; };
  auto amount = [](std::uint64_t id) { return 50.0 + double(id % 37); };
  auto noisy = [](std::uint64_t id) {
    return (id % 3 == 0) ? 500.0 : 0.0;
  };  // abnormal for everyone
  feed(store, clean, kT0, ids, 2,
       [&](auto id, auto c) { return c == 0 ? amount(id) : 30.0 + id % 11; });
  feed(store, feats, kT0 + kSec, ids, 3, [&](auto id, auto c) {
    if (c == 0) return bugged(id) ? amount(id) * 1000 : amount(id);
    return c == 1 ? 30.0 + id % 11 : noisy(id);
  });
  const auto label = [](std::uint64_t id) { return id % 2 == 0 ? 1.0 : 0.0; };
  feed(store, pred, kT0 + 2 * kSec, ids, 1, [&](auto id, auto) {
    const bool right = !bugged(id);
    return (label(id) == 1.0) == right ? 0.9 : 0.1;
  });
  feed(store, labels, kT0 + 3 * kSec, ids, 1, [&](auto id, auto) { return label(id); });
  retention::ReviewRequest rq;
  rq.stream = "l/pred";
  const auto r = retention::review(store.read(), rq, nullptr);
  ASSERT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.labels_stream, "l/labels");
  EXPECT_EQ(r.predictions, 2000u);
  EXPECT_EQ(r.labelled, 2000u);
  EXPECT_EQ(r.wrong, 100u);
  EXPECT_EQ(r.correct, 1900u);
  ASSERT_EQ(r.streams.size(), 2u);
  EXPECT_EQ(r.streams[0].stream, "l/features");
  EXPECT_EQ(r.streams[0].features[0].feature, "amount");
  EXPECT_DOUBLE_EQ(r.streams[0].features[0].auc, 1.0);
  EXPECT_NE(r.streams[0].why.find("amount"), std::string::npos);
  // "noisy" is abnormal for a third of all ids, wrong or not: it does not outrank.
  for (const auto& f : r.streams[0].features) {
    if (f.feature == "noisy") {
      EXPECT_LT(f.auc, 0.75);
    }
  }

  // Flags count as wrong, and a reference lookup is used where it answers.
  const std::vector<std::uint64_t> flag{3, 5};
  store.flag("l/pred", flag, kT0);
  std::size_t lookups = 0;
  const auto r2 =
      retention::review(store.read(), rq,
                        [&](const std::string&, const std::string& f,
                            std::size_t) -> std::optional<retention::FeatureReference> {
                          ++lookups;
                          if (f == "amount")
                            return retention::FeatureReference{68.0, 10.7, "detectors (pinned)"};
                          return std::nullopt;
                        });
  EXPECT_EQ(r2.wrong, 102u);
  EXPECT_EQ(r2.flagged, 2u);
  EXPECT_GT(lookups, 0u);
  EXPECT_EQ(r2.streams[0].features[0].reference.source, "detectors (pinned)");
}

TEST(RetentionConfig, StrictWithFileLineColumn) {
  const auto doc =
      core::load_text("retention:\n  keep_share: 0.5\n  bucket: 1h\n  max_bytes: 2GiB\n", "t.yaml");
  core::ConfigSection top(doc, "t.yaml", "");
  const auto c = retention::parse_retention_config(top.child("retention"));
  EXPECT_EQ(c.keep_share, 0.5);
  EXPECT_EQ(c.bucket, std::chrono::hours(1));
  EXPECT_EQ(c.max_bytes, 2ull << 30);
  for (const char* bad : {"retention:\n  keep_share: 0\n", "retention:\n  buckets: 1h\n",
                          "retention:\n  bucket: 2h\n  max_age: 1h\n"}) {
    const auto d = core::load_text(bad, "bad.yaml");
    core::ConfigSection t(d, "bad.yaml", "");
    try {
      retention::parse_retention_config(t.child("retention"));
      ADD_FAILURE() << "accepted: " << bad;
    } catch (const core::ConfigError& e) {
      EXPECT_EQ(e.file(), "bad.yaml");
      EXPECT_GT(e.line(), 0) << e.what();
    }
  }
}
