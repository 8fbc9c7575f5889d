// Many writer threads, one concurrent reader, a small ring: the reader is lapped constantly. Every
// delivered record must be intact (self-checking payload), and every row must be accounted for:
// read + overwritten == written. Run under TSan in CI (tests/tsan.supp explains the one
// intentional race: the reader's seqlock copy).
#include <atomic>
#include <cstring>
#include <thread>

#include "ring_fixture.hpp"

namespace mltap::test {
namespace {

constexpr std::uint32_t kCols = 8;

// Row r of thread t: [t, r, r*3+t, ..., checksum]: any mix of two rows fails the check.
void fill_row(float* row, std::uint32_t t, std::uint32_t r) {
  float sum = 0;
  for (std::uint32_t c = 0; c + 1 < kCols; ++c) {
    row[c] = static_cast<float>((t * 7919u + r * (c + 1)) % 65536u);
    sum += row[c] * static_cast<float>(c + 1);
  }
  row[kCols - 1] = sum;
}
bool row_ok(const float* row) {
  float sum = 0;
  for (std::uint32_t c = 0; c + 1 < kCols; ++c) sum += row[c] * static_cast<float>(c + 1);
  return sum == row[kCols - 1];
}

class CheckingCollector : public ingest::RecordVisitor {
 public:
  void on_record(const ingest::RecordView& r) override {
    rows += r.rows;
    const auto* p = reinterpret_cast<const float*>(r.payload.data());
    for (std::uint32_t i = 0; i < r.rows; ++i) {
      if (!row_ok(p + i * kCols)) bad++;
    }
  }
  std::uint64_t rows = 0, bad = 0;
};

TEST(Stress, ConcurrentWritersAndALappedReaderNeverAcceptATornRecord) {
  TempShmDir dir;
  auto o = small_options(dir.path(), kCols);
  o.lanes = 8;
  Stream s("t/stress", o);
  auto r = open_reader(s.segment_path());
  ASSERT_TRUE(r);
  constexpr std::uint32_t kThreads = 4;
#if defined(__SANITIZE_THREAD__)
  constexpr std::uint32_t kRows = 20000;
#else
  constexpr std::uint32_t kRows = 200000;
#endif
  std::atomic<bool> writing{true};
  CheckingCollector c;
  std::uint64_t overwritten = 0, invalid = 0;
  std::thread reader([&] {
    while (writing.load()) {
      const auto counts = r->poll(c);
      overwritten += counts.rows_overwritten;
      for (auto n : counts.records_invalid) invalid += n;
    }
  });
  std::vector<std::thread> writers;
  for (std::uint32_t t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      float batch[4 * kCols];
      for (std::uint32_t i = 0; i < kRows;) {
        const std::uint32_t n = 1 + (i % 4);  // records of 1..4 rows
        for (std::uint32_t b = 0; b < n; ++b) fill_row(batch + b * kCols, t, i + b);
        s.write_batch(batch, n, kCols);
        i += n;
      }
    });
  }
  for (auto& w : writers) w.join();
  writing = false;
  reader.join();
  // Drain what is left.
  for (int i = 0; i < 4; ++i) {
    const auto counts = r->poll(c);
    overwritten += counts.rows_overwritten;
    for (auto n : counts.records_invalid) invalid += n;
  }
  const auto st = s.stats();
  EXPECT_EQ(c.bad, 0u) << "a torn record was accepted";
  EXPECT_EQ(invalid, 0u);
  EXPECT_GE(st.rows_written, std::uint64_t{kThreads} * kRows);
  EXPECT_EQ(c.rows + overwritten, st.rows_committed) << "every committed row is read or counted lost";
  EXPECT_GT(c.rows, 0u);
}

TEST(Stress, ManyShortLivedThreadsReuseLanes) {
  TempShmDir dir;
  auto o = small_options(dir.path(), kCols);
  o.lanes = 2;
  o.ring_bytes = 1 << 20;
  Stream s("t/churn", o);
  for (int round = 0; round < 50; ++round) {
    std::thread a([&] { float row[kCols]; fill_row(row, 1, round); s.write(std::span<const float>(row)); });
    std::thread b([&] { float row[kCols]; fill_row(row, 2, round); s.write(std::span<const float>(row)); });
    a.join();
    b.join();
  }
  EXPECT_EQ(s.stats().rows_no_lane, 0u);
  EXPECT_EQ(s.stats().rows_committed, 100u);
  auto r = open_reader(s.segment_path());
  CheckingCollector c;
  r->poll(c);
  EXPECT_EQ(c.rows, 100u);
  EXPECT_EQ(c.bad, 0u);
}

}  // namespace
}  // namespace mltap::test
