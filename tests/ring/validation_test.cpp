// The reader against hostile segments: every header field, every record field, truncation under
// the mapping, a producer that died mid-record, and random corruption. The reader must refuse or
// count, never crash, never accept a torn record.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <random>

#include "agent/ingest/guarded_memory.hpp"
#include "ring_fixture.hpp"

namespace mltap::test {
namespace {

using format::LaneHeader;
using format::SegmentHeader;
using ingest::RejectReason;

// Maps a segment file read-write so a test can corrupt it like a hostile producer would.
class RawSegment {
 public:
  explicit RawSegment(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDWR);
    size_ = static_cast<std::size_t>(::lseek(fd_, 0, SEEK_END));
    base_ = static_cast<std::uint8_t*>(::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0));
  }
  ~RawSegment() {
    ::munmap(base_, size_);
    ::close(fd_);
  }
  SegmentHeader& header() { return *reinterpret_cast<SegmentHeader*>(base_); }
  std::uint8_t* lane(std::uint32_t i) { return base_ + header().lanes_offset + i * header().lane_stride; }
  LaneHeader& lane_header(std::uint32_t i) { return *reinterpret_cast<LaneHeader*>(lane(i)); }
  format::IndexEntry& index(std::uint32_t lane_no, std::uint64_t seq) {
    auto* idx = reinterpret_cast<format::IndexEntry*>(lane(lane_no) + header().index_offset);
    return idx[seq & (header().index_entries - 1)];
  }
  format::RecordHeader& record(std::uint32_t lane_no, std::uint64_t seq) {
    const auto& e = index(lane_no, seq);
    return *reinterpret_cast<format::RecordHeader*>(lane(lane_no) + header().data_offset +
                                                    (e.pos & (header().data_bytes - 1)));
  }
  std::uint8_t* base() { return base_; }
  std::size_t size() const { return size_; }

 private:
  int fd_ = -1;
  std::size_t size_ = 0;
  std::uint8_t* base_ = nullptr;
};

RejectReason open_fails(const std::string& path) {
  RejectReason reason{};
  std::string detail;
  auto r = ingest::SegmentReader::open(path, ingest::ReaderLimits{}, reason, detail);
  EXPECT_FALSE(r) << "expected refusal of " << path;
  EXPECT_FALSE(detail.empty()) << "a refusal says why";
  return reason;
}

// A valid segment copied to a file we can corrupt freely (the producer keeps its own).
std::string copy_segment(const TempShmDir& dir, const std::string& from, const std::string& name) {
  const std::string to = dir.path() + "/" + name;
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(to, std::ios::binary);
  out << in.rdbuf();
  return to;
}

class Validation : public ::testing::Test {
 protected:
  void SetUp() override {
    stream_ = std::make_unique<Stream>("t/valid", small_options(dir_.path(), 4));
    const float v[4] = {1, 2, 3, 4};
    for (int i = 0; i < 10; ++i) stream_->write(std::span<const float>(v));
    path_ = stream_->segment_path();
  }
  TempShmDir dir_;
  std::unique_ptr<Stream> stream_;
  std::string path_;
};

TEST_F(Validation, GarbageFilesAreRefusedWithTheirReason) {
  {
    std::ofstream f(dir_.path() + "/random");
    std::mt19937 rng(7);
    for (int i = 0; i < 64 * 1024; ++i) f.put(static_cast<char>(rng()));
  }
  EXPECT_EQ(open_fails(dir_.path() + "/random"), RejectReason::bad_magic);
  { std::ofstream f(dir_.path() + "/tiny"); f << "x"; }
  EXPECT_EQ(open_fails(dir_.path() + "/tiny"), RejectReason::too_small);
  EXPECT_EQ(open_fails(dir_.path()), RejectReason::io_error) << "a directory";
  EXPECT_EQ(open_fails(dir_.path() + "/missing"), RejectReason::io_error);
}

TEST_F(Validation, EveryHeaderFieldIsChecked) {
  struct Case {
    const char* what;
    void (*corrupt)(RawSegment&);
    RejectReason expected;
  };
  const Case cases[] = {
      {"magic", [](RawSegment& s) { s.header().magic ^= 1; }, RejectReason::bad_magic},
      {"abi", [](RawSegment& s) { s.header().abi_major = format::kAbiMajor + 1; }, RejectReason::abi_mismatch},
      {"abi 1", [](RawSegment& s) { s.header().abi_major = 1; }, RejectReason::abi_mismatch},
      {"endian", [](RawSegment& s) { s.header().endian_marker = 0x04030201; }, RejectReason::endianness},
      {"word", [](RawSegment& s) { s.header().word_bits = 32; }, RejectReason::bad_layout},
      {"size", [](RawSegment& s) { s.header().segment_bytes += 4096; }, RejectReason::bad_layout},
      {"data_bytes", [](RawSegment& s) { s.header().data_bytes = 1ull << 40; }, RejectReason::bad_layout},
      {"not pow2", [](RawSegment& s) { s.header().data_bytes += 64; }, RejectReason::bad_layout},
      {"lanes", [](RawSegment& s) { s.header().lane_count = 100000; }, RejectReason::bad_layout},
      {"lanes offset", [](RawSegment& s) { s.header().lanes_offset += 4096; }, RejectReason::bad_layout},
      {"index", [](RawSegment& s) { s.header().index_entries = 3; }, RejectReason::bad_layout},
      {"max record", [](RawSegment& s) { s.header().max_record_bytes = 1ull << 50; }, RejectReason::bad_layout},
      {"state", [](RawSegment& s) { s.header().state = 77; }, RejectReason::bad_layout},
      {"name nul", [](RawSegment& s) { std::memset(s.header().stream_name, 'a', sizeof s.header().stream_name); }, RejectReason::bad_identity},
      {"name chars", [](RawSegment& s) { s.header().stream_name[0] = '\n'; }, RejectReason::bad_identity},
      {"component", [](RawSegment& s) { s.header().component[0] = '"'; }, RejectReason::bad_identity},
      {"kind", [](RawSegment& s) { s.header().kind = 42; }, RejectReason::bad_identity},
      {"dtype", [](RawSegment& s) { s.header().declared_dtype = 99; }, RejectReason::bad_identity},
      {"ndim", [](RawSegment& s) { s.header().declared_ndim = 9; }, RejectReason::bad_identity},
      {"feature count", [](RawSegment& s) { s.header().feature_count = 70000; }, RejectReason::bad_schema},
      {"name ref", [](RawSegment& s) {
         auto* refs = reinterpret_cast<format::NameRef*>(s.base() + s.header().schema_offset + sizeof(format::SchemaHeader));
         refs[1].offset = 1u << 30;
       }, RejectReason::bad_schema},
      {"name text", [](RawSegment& s) {
         auto* sh = reinterpret_cast<format::SchemaHeader*>(s.base() + s.header().schema_offset);
         auto* text = reinterpret_cast<char*>(sh + 1) + 4 * sizeof(format::NameRef);
         text[0] = '\\';
       }, RejectReason::bad_schema},
      {"shape vs names", [](RawSegment& s) { s.header().declared_shape[0] = 5; }, RejectReason::bad_schema},
      {"duplicate name", [](RawSegment& s) {
         // Feature 1 points at feature 0's text: a hostile file declaring one name twice.
         auto* refs = reinterpret_cast<format::NameRef*>(s.base() + s.header().schema_offset + sizeof(format::SchemaHeader));
         refs[1] = refs[0];
       }, RejectReason::bad_schema},
      {"artifacts out of bounds", [](RawSegment& s) {
         s.header().artifacts_offset = 16;
         s.header().artifacts_bytes = 1u << 30;
       }, RejectReason::bad_schema},
      {"artifact not absolute", [](RawSegment& s) {
         char* at = reinterpret_cast<char*>(s.base() + s.header().schema_offset + 2048);
         std::memcpy(at, "relative\0", 9);
         s.header().artifacts_offset = 2048;
         s.header().artifacts_bytes = 9;
       }, RejectReason::bad_schema},
      {"task", [](RawSegment& s) { s.header().task = format::kTaskMax + 1; }, RejectReason::bad_identity},
      {"labels stream out of bounds", [](RawSegment& s) {
         s.header().labels_stream_offset = 16;
         s.header().labels_stream_bytes = 1u << 20;
       }, RejectReason::bad_schema},
      {"labels stream name", [](RawSegment& s) {
         char* at = reinterpret_cast<char*>(s.base() + s.header().schema_offset + 2048);
         std::memcpy(at, "a b", 3);
         s.header().labels_stream_offset = 2048;
         s.header().labels_stream_bytes = 3;
       }, RejectReason::bad_schema},
      {"artifact not terminated", [](RawSegment& s) {
         char* at = reinterpret_cast<char*>(s.base() + s.header().schema_offset + 2048);
         std::memcpy(at, "/abc", 4);
         s.header().artifacts_offset = 2048;
         s.header().artifacts_bytes = 4;
       }, RejectReason::bad_schema},
  };
  int n = 0;
  for (const auto& c : cases) {
    const std::string p = copy_segment(dir_, path_, "case" + std::to_string(n++));
    {
      RawSegment raw(p);
      c.corrupt(raw);
    }
    EXPECT_EQ(open_fails(p), c.expected) << c.what;
  }
}

// ABI 2.1: a predictions stream's task and labels stream reach the reader as declared.
TEST(Performance, TaskAndLabelsStreamRoundTrip) {
  TempShmDir dir;
  auto o = small_options(dir.path(), 1);
  o.kind = format::StreamKind::predictions;
  o.task = format::Task::multiclass;
  o.labels_stream = "shop/labels";
  o.artifacts = {"/srv/model.pt"};
  Stream s("shop/predictions", o);
  const float v[1] = {1};
  s.write(std::span<const float>(v));
  RejectReason reason{};
  std::string detail;
  auto r = ingest::SegmentReader::open(s.segment_path(), ingest::ReaderLimits{}, reason, detail);
  ASSERT_TRUE(r) << detail;
  EXPECT_EQ(r->identity().task, format::Task::multiclass);
  EXPECT_EQ(r->identity().labels_stream, "shop/labels");
  EXPECT_EQ(r->identity().artifacts, std::vector<std::string>{"/srv/model.pt"});
  auto bad = small_options(dir.path(), 1);
  bad.labels_stream = "shop/labels";  // kind features
  EXPECT_THROW(Stream("shop/features", bad), std::invalid_argument);
}

TEST_F(Validation, FileSizeMismatchIsRefused) {
  const std::string p = copy_segment(dir_, path_, "short");
  ASSERT_EQ(::truncate(p.c_str(), 64 * 1024), 0);
  EXPECT_EQ(open_fails(p), RejectReason::bad_layout);
}

TEST_F(Validation, BadRecordsAreCountedAndTheRestRead) {
  const std::string p = copy_segment(dir_, path_, "records");
  {
    RawSegment raw(p);
    raw.record(0, 1).dtype = 99;
    raw.record(0, 2).dims[0] = 5;             // payload no longer matches the shape
    raw.record(0, 3).seq = 12345;             // disagrees with its index entry
    raw.index(0, 4).size = 1u << 30;          // out of bounds
    raw.record(0, 5).ndim = 0;
    raw.record(0, 6).payload_offset = 1;
  }
  auto r = open_reader(p);
  Collector c;
  const auto counts = r->poll(c);
  EXPECT_EQ(counts.records, 4u);
  EXPECT_EQ(counts.records_invalid[static_cast<int>(core::InvalidReason::bad_dtype)], 1u);
  EXPECT_EQ(counts.records_invalid[static_cast<int>(core::InvalidReason::bad_size)], 2u);
  EXPECT_EQ(counts.records_invalid[static_cast<int>(core::InvalidReason::bad_header)], 1u);
  EXPECT_EQ(counts.records_invalid[static_cast<int>(core::InvalidReason::bad_index)], 1u);
  EXPECT_EQ(counts.records_invalid[static_cast<int>(core::InvalidReason::bad_shape)], 1u);
  for (const auto& rec : c.records) {
    float v[4];
    std::memcpy(v, rec.payload.data(), sizeof v);
    EXPECT_EQ(v[3], 4.0f);
  }
}

// The reader does not take the header's word for how large a record may be (up to half the ring:
// 512 MiB in a 1 GiB ring, one buffer per segment): records over ReaderLimits::max_record_bytes
// (ingest.max_record_bytes) are refused unread, counted by their own cause with their rows; the
// records around them are read.
TEST(RecordLimit, RecordsOverTheReadersLimitAreCountedNotCopied) {
  TempShmDir dir;
  StreamOptions o = small_options(dir.path(), 4);
  o.ring_bytes = 1 << 20;  // the producer may write records up to 512 KiB
  o.lanes = 1;
  Stream s("t/big", o);
  std::vector<float> big(4 * 8192, 1.0f);  // 8,192 rows of 16 bytes: one record of 128 KiB + header
  const float small_row[4] = {1, 2, 3, 4};
  s.write(std::span<const float>(small_row));
  s.write_batch(big.data(), 8192, 4);
  s.write(std::span<const float>(small_row));
  {
    ingest::ReaderLimits limits;
    limits.max_record_bytes = 64 << 10;
    ingest::RejectReason reason{};
    std::string detail;
    auto r = ingest::SegmentReader::open(s.segment_path(), limits, reason, detail);
    ASSERT_TRUE(r) << detail;
    Collector c;
    const auto counts = r->poll(c);
    EXPECT_EQ(counts.records, 2u);
    EXPECT_EQ(c.rows, 2u);
    EXPECT_EQ(counts.records_invalid[static_cast<int>(core::InvalidReason::too_large)], 1u);
    EXPECT_EQ(counts.rows_invalid, 8192u);
    EXPECT_EQ(core::invalid_reason_name(core::InvalidReason::too_large), "too_large");
  }
  // The default limit (64 MiB) reads the same record.
  auto r = open_reader(s.segment_path());
  ASSERT_TRUE(r);
  Collector c;
  const auto counts = r->poll(c);
  EXPECT_EQ(counts.records, 3u);
  EXPECT_EQ(c.rows, 8194u);
  EXPECT_EQ(counts.rows_invalid, 0u);
}

// The producer announced record 10 and wrote half of it, then died: the reader never sees it.
TEST_F(Validation, AProducerThatDiedMidRecordDoesNotFoolTheReader) {
  const std::string p = copy_segment(dir_, path_, "crashed");
  {
    RawSegment raw(p);
    auto& lh = raw.lane_header(0);
    lh.reserve_seq = 11;
    lh.reserve_pos = lh.next_pos + 128;
    // Half a header of garbage where record 10 would go, index slot untouched.
    std::memset(raw.lane(0) + raw.header().data_offset + (lh.next_pos & (raw.header().data_bytes - 1)), 0xAB, 32);
  }
  auto r = open_reader(p);
  Collector c;
  auto counts = r->poll(c);
  EXPECT_EQ(counts.records, 10u);
  std::uint64_t invalid = 0;
  for (auto n : counts.records_invalid) invalid += n;
  EXPECT_EQ(invalid, 0u);
  counts = r->poll(c);
  EXPECT_EQ(counts.records, 0u) << "nothing beyond commit_seq is ever read";
}

// A record whose bytes the producer announced it is overwriting is never delivered.
TEST_F(Validation, ARecordAnnouncedForOverwriteIsLostNotDelivered) {
  const std::string p = copy_segment(dir_, path_, "torn");
  {
    RawSegment raw(p);
    auto& lh = raw.lane_header(0);
    // The writer claims to be writing a byte range that covers records 0..1 of the next lap.
    const auto& e1 = raw.index(0, 1);
    lh.reserve_pos = e1.pos + raw.header().data_bytes + 1;
  }
  auto r = open_reader(p);
  Collector c;
  r->poll(c);
  ASSERT_FALSE(c.records.empty());
  EXPECT_GE(c.records.front().seq, 2u) << "records 0 and 1 overlap the announced overwrite";
}

TEST_F(Validation, TruncatedUnderTheMappingEndsTheSegmentWithoutACrash) {
  const std::string p = copy_segment(dir_, path_, "shrinks");
  auto r = open_reader(p);
  ASSERT_TRUE(r);
  const auto faults_before = ingest::sigbus_caught();
  ASSERT_EQ(::truncate(p.c_str(), 0), 0);
  Collector c;
  r->poll(c);
  EXPECT_FALSE(r->healthy());
  EXPECT_GT(ingest::sigbus_caught(), faults_before);
  EXPECT_FALSE(r->producer_counters());
  EXPECT_FALSE(r->set_flag("x", 1));
  r->poll(c);  // stays finished, still no crash
}

// Random corruption of lane headers, index and data while reading: never a crash, never more
// records than were written, every delivered record self-consistent.
TEST_F(Validation, RandomCorruptionNeverCrashesTheReader) {
  std::mt19937_64 rng(12345);
  for (int round = 0; round < 200; ++round) {
    const std::string p = copy_segment(dir_, path_, "fuzz");
    {
      RawSegment raw(p);
      const std::size_t lane0 = raw.header().lanes_offset;
      const std::size_t span = raw.header().data_offset + 4096;
      for (int k = 0; k < 1 + round % 16; ++k) {
        const std::size_t off = lane0 + rng() % span;
        raw.base()[off] = static_cast<std::uint8_t>(rng());
      }
      if (round % 5 == 0) raw.lane_header(0).commit_seq = rng();
      if (round % 7 == 0) raw.index(0, rng() % 10).pos = rng();
    }
    auto r = open_reader(p);
    ASSERT_TRUE(r);
    Collector c;
    for (int i = 0; i < 3; ++i) r->poll(c);
    for (const auto& rec : c.records) {
      ASSERT_EQ(rec.payload.size(), std::size_t{rec.rows} *
                                        [&] { std::size_t e = 1; for (auto d : rec.shape) e *= d; return e; }() *
                                        format::dtype_size(rec.dtype));
    }
    r.reset();
    ::unlink(p.c_str());
  }
}

}  // namespace
}  // namespace mltap::test
