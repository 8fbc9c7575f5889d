// Fuzz target: the segment header validation and the record reader/decoder of agent/ingest.
//
// Input: the first bytes of a segment file. The file the reader opens is that image zero-padded
// to the size its own header claims (a sparse tmpfs file, as a producer's ftruncate leaves it;
// claims up to 2 GiB are honoured, so the large rings check_layout accepts are reachable without
// megabyte inputs). The reader then does what the ingest thread does with a segment: open
// (six validation steps), poll every lane, decode each record to doubles exactly as
// ingest.cpp's visitor does (rows x row_elements values from the payload), read the producer
// counters and state, copy recent records, write the control block.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "agent/ingest/decode.hpp"
#include "agent/ingest/segment.hpp"
#include "fuzz_support.hpp"

using namespace mltap;
using namespace mltap::ingest;

namespace {

constexpr std::uint64_t kMaxClaim = 2ull << 30;

class DecodeVisitor : public RecordVisitor {
 public:
  void on_record(const RecordView& r) override {
    const std::uint64_t dsize = format::dtype_size(r.dtype);
    FUZZ_CHECK(dsize != 0, "record of dtype %u passed validation", static_cast<unsigned>(r.dtype));
    FUZZ_CHECK(r.rows > 0 && r.row_elements > 0, "empty record passed validation");
    // What the consumer relies on: the payload holds rows x row_elements values of dtype.
    const unsigned __int128 want = static_cast<unsigned __int128>(r.rows) * r.row_elements * dsize;
    FUZZ_CHECK(want == r.payload.size(), "payload of %zu bytes for %u rows x %llu elements x %llu bytes",
               r.payload.size(), r.rows, static_cast<unsigned long long>(r.row_elements),
               static_cast<unsigned long long>(dsize));
    FUZZ_CHECK(r.trace_ids.empty() || r.trace_ids.size() == r.rows, "trace ids for other rows");
    std::uint64_t elems = 1;
    for (auto d : r.row_shape) elems *= d;
    FUZZ_CHECK(elems == r.row_elements && !r.row_shape.empty() && r.row_shape.size() <= format::kMaxRowDims,
               "row shape and row_elements disagree");
    // As ingest.cpp's visitor: rows * cols values decoded from the payload (the check above
    // makes any prefix of them safe to decode; a 1 GiB record is cut to its first 8 MiB).
    const std::size_t n = std::min<std::size_t>(static_cast<std::size_t>(r.rows) * r.row_elements, 1u << 20);
    if (buf_.size() < n) buf_.resize(n);
    decode_to_double(r.dtype, r.payload.data(), n, buf_.data());
    for (std::size_t i = 0; i < n; ++i) sink_ += std::isfinite(buf_[i]) ? 1 : 0;
    ++records_;
  }
  std::uint64_t records_ = 0;
  std::uint64_t sink_ = 0;

 private:
  std::vector<double> buf_;
};

bool write_file(const std::string& path, const std::uint8_t* data, std::size_t size) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  std::size_t done = 0;
  while (done < size) {
    const ssize_t w = ::write(fd, data + done, size - done);
    if (w <= 0) break;
    done += static_cast<std::size_t>(w);
  }
  std::uint64_t claim = 0;
  if (size >= offsetof(format::SegmentHeader, segment_bytes) + sizeof claim) {
    std::memcpy(&claim, data + offsetof(format::SegmentHeader, segment_bytes), sizeof claim);
  }
  if (claim > size && claim <= kMaxClaim) {
    if (::ftruncate(fd, static_cast<off_t>(claim)) != 0) std::perror("ftruncate");
  }
  ::close(fd);
  return done == size;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static mltap::fuzz::TempDir dir("segment");
  const std::string path = dir.path() + "/mltap.fuzz.1.0";
  if (!write_file(path, data, size)) return 0;

  // Few records per poll: a record may legally be as large as the ring (1 GiB), and the reader
  // copies and the visitor decodes each one whole; thousands of them per input only time out.
  ReaderLimits limits;
  limits.max_records_per_poll = 1;
  RejectReason reason{};
  std::string detail;
  auto reader = SegmentReader::open(path, limits, reason, detail);
  if (!reader) {
    FUZZ_CHECK(reject_reason_name(reason) != "unknown", "unnamed rejection");
    FUZZ_CHECK(!detail.empty(), "rejection %s without detail", std::string(reject_reason_name(reason)).c_str());
    ::unlink(path.c_str());
    return 0;
  }
  const auto& id = reader->identity();
  FUZZ_CHECK(!id.stream.empty() && id.lane_count > 0, "accepted segment without identity");

  DecodeVisitor v;
  (void)reader->poll(v);
  (void)reader->producer_counters();
  (void)reader->state();
  std::vector<SegmentReader::RawCopy> recent;
  if (id.data_bytes <= (64u << 20)) recent = reader->copy_recent(2, 1 << 20);
  for (const auto& rc : recent) {
    FUZZ_CHECK(rc.payload.size() == std::uint64_t{rc.rows} * format::dtype_size(rc.dtype) *
                                         [&] {
                                           std::uint64_t e = 1;
                                           for (auto d : rc.row_shape) e *= d;
                                           return e;
                                         }(),
               "copied record's payload disagrees with its shape");
  }
  reader->heartbeat(1);
  reader->set_flag("fuzz_flag", 7);
  reader->boost_sampling(500, 2);
  (void)reader->unread_committed_rows();
  reader.reset();
  ::unlink(path.c_str());
  return 0;
}
