// Fuzz target: the producer SDK's write path and the agent's segment reader over one real ring.
//
// Each input is a program of operations run on a fresh stream (the real mltap::Stream of
// shm/src, writing a real tmpfs segment) and a real ingest::SegmentReader mapping the same file:
//   write records (any dtype, shape, row count, with or without trace ids, including invalid and
//   too-large ones), poll the reader, change bytes of the segment through a third mapping (a
//   hostile writer: header, control block, lane header, index, data, or anywhere), truncate or
//   regrow the file, reopen the reader on the changed file, set flags both ways, close.
// Neither side may crash, hang or overrun. While no byte was changed behind the SDK's back the
// reader must see exactly what the producer committed: rows read + overwritten == committed,
// nothing invalid, and (when nothing was lapped) the same payload bytes in the same order.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <memory>
#include <vector>

#include "agent/ingest/decode.hpp"
#include "agent/ingest/guarded_memory.hpp"
#include "agent/ingest/segment.hpp"
#include "fuzz_support.hpp"
#include "mltap/stream.hpp"

using namespace mltap;
using namespace mltap::ingest;

namespace {

struct Collect : RecordVisitor {
  std::vector<std::uint8_t> payload;  // every payload read, in order
  std::vector<double> values;
  void on_record(const RecordView& r) override {
    const std::size_t n = static_cast<std::size_t>(r.rows) * static_cast<std::size_t>(r.row_elements);
    FUZZ_CHECK(n * format::dtype_size(r.dtype) == r.payload.size(), "payload size disagrees with shape");
    if (values.size() < n) values.resize(n);
    decode_to_double(r.dtype, r.payload.data(), n, values.data());
    if (payload.size() < (8u << 20)) payload.insert(payload.end(), r.payload.begin(), r.payload.end());
  }
};

// The hostile writer's own mapping of the segment.
struct Mapping {
  std::uint8_t* base = nullptr;
  std::size_t size = 0;     // mapped length
  std::size_t valid = 0;    // bytes backed by the file now (after truncation)
  ~Mapping() {
    if (base) ::munmap(base, size);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static mltap::fuzz::TempDir dir("sequence");
  // Producer and agent share this process (they never do in production): the agent's SIGBUS
  // guard goes first, so that the SDK's, installed with each ring, sees every fault and passes
  // the ones outside its rings on to it (segment_file.cpp chains; guarded_memory.cpp does not).
  static const bool guards_ordered = (install_sigbus_guard(), true);
  (void)guards_ordered;
  mltap::fuzz::Bytes in(data, size);

  StreamOptions o;
  o.component = "fuzz";
  o.shm_dir = dir.path();
  o.ns = "fuzz";
  o.ring_bytes = 64u << 10;  // the smallest ring: laps after a few writes
  o.lanes = 1 + (in.u8() & 1);
  o.sampling_budget = 0;     // keep every row: the exact-accounting oracle needs it
  const std::uint8_t declare = in.u8();
  if (declare & 1) o.features = {"a", "b", "c"};
  else if (declare & 2) o.row_shape = {2, 2};
  std::unique_ptr<Stream> stream = std::make_unique<Stream>("fuzz/sequence", o);
  const std::string path = stream->segment_path();
  if (path.empty()) return 0;  // no ring (a full /dev/shm): nothing to read

  Mapping m;
  {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    FUZZ_CHECK(fd >= 0, "cannot open %s", path.c_str());
    struct stat st {};
    ::fstat(fd, &st);
    m.size = m.valid = static_cast<std::size_t>(st.st_size);
    void* p = ::mmap(nullptr, m.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    FUZZ_CHECK(p != MAP_FAILED, "mmap");
    m.base = static_cast<std::uint8_t*>(p);
  }
  format::SegmentHeader h{};
  std::memcpy(&h, m.base, sizeof h);

  ReaderLimits limits;
  limits.max_records_per_poll = 256;
  RejectReason reason{};
  std::string detail;
  std::unique_ptr<SegmentReader> reader = SegmentReader::open(path, limits, reason, detail);
  FUZZ_CHECK(reader != nullptr, "the SDK's own segment was refused: %s", detail.c_str());

  Collect seen;
  std::vector<std::uint8_t> written;  // payload bytes of records the producer committed
  bool tampered = false;               // a byte changed behind the SDK: no exactness oracle
  bool content_exact = true;           // written == seen.payload is expected
  std::uint64_t rows_read = 0, rows_lost = 0, rows_invalid = 0;
  std::vector<std::uint8_t> src;
  std::vector<std::uint64_t> ids;

  for (int op_count = 0; !in.empty() && op_count < 64; ++op_count) {
    const std::uint8_t op = in.u8();
    switch (op % 8) {
      case 0:
      case 1: {  // write a tensor
        const std::uint8_t t = in.u8();
        const auto dtype = static_cast<DType>(t % (format::kDTypeMax + 2));  // incl. invalid ones
        const std::uint32_t ndim = 1 + in.u8() % 7;                         // 7 > kMaxRowDims
        std::uint32_t shape[8];
        std::uint64_t elems = 1;
        for (std::uint32_t d = 0; d < ndim; ++d) {
          const std::uint8_t b = in.u8();
          shape[d] = (b & 0x80) ? (b & 0x7f) * 97u : (b & 0x0f);  // mostly small, some large, zeros
          elems *= shape[d];
        }
        const std::size_t rows = in.u8() % 40;
        const bool with_ids = in.u8() & 1;
        const std::uint64_t dsize = format::dtype_size(dtype) ? format::dtype_size(dtype) : 1;
        const std::uint64_t bytes = rows * elems * dsize;
        if (bytes > (1u << 20)) break;  // the SDK reads rows x row bytes from the caller
        src.resize(bytes);
        const std::string_view fill = in.take(bytes);
        for (std::size_t i = 0; i < bytes; ++i) {
          src[i] = fill.empty() ? static_cast<std::uint8_t>(i * 31) : static_cast<std::uint8_t>(fill[i % fill.size()]);
        }
        ids.assign(with_ids ? rows : 0, 0);
        for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = i * 0x9e3779b97f4a7c15ull;
        const StreamStats before = stream->stats();
        const WriteResult r = stream->write_tensor(src.data(), dtype, std::span<const std::uint32_t>(shape, ndim),
                                                   rows, ids);
        const StreamStats after = stream->stats();
        if (!tampered) {
          FUZZ_CHECK(after.rows_written - before.rows_written == rows, "rows_written moved by %llu for %zu rows",
                     static_cast<unsigned long long>(after.rows_written - before.rows_written), rows);
          const std::uint64_t committed = after.rows_committed - before.rows_committed;
          if (r == WriteResult::written && committed == rows) {
            written.insert(written.end(), src.begin(), src.end());
          } else if (committed != 0) {
            content_exact = false;
          }
          // An empty batch is `written` (nothing was lost), though no row reached the ring.
          FUZZ_CHECK((r == WriteResult::written) == (committed > 0 || rows == 0),
                     "result %d with %llu of %zu rows committed (dtype %u, %u dims, first %u)", static_cast<int>(r),
                     static_cast<unsigned long long>(committed), rows, static_cast<unsigned>(dtype), ndim, shape[0]);
        }
        break;
      }
      case 2:
      case 3: {  // poll until drained (or the budget says come back)
        for (int i = 0; i < 4; ++i) {
          const PollCounts c = reader->poll(seen);
          rows_read += c.rows;
          rows_lost += c.rows_overwritten;
          rows_invalid += c.rows_invalid;
          if (!c.more) break;
        }
        break;
      }
      case 4: {  // hostile writer: change 1, 2, 4 or 8 bytes somewhere in the segment
        const std::uint8_t region = in.u8();
        const std::uint64_t lane0 = h.lanes_offset + (region & 0x80 ? h.lane_stride * (o.lanes - 1) : 0);
        std::uint64_t off = 0;
        switch (region % 6) {
          case 0: off = in.u16() % format::kPageSize; break;                    // header
          case 1: off = h.control_offset + in.u16() % format::kPageSize; break; // control block
          case 2: off = lane0 + in.u8(); break;                                 // lane header
          case 3: off = lane0 + h.index_offset + in.u16() % (h.index_entries * 32ull); break;
          case 4: off = lane0 + h.data_offset + in.u32() % h.data_bytes; break;
          default: off = in.u32() % m.size; break;
        }
        const unsigned width = 1u << (in.u8() % 4);
        const std::uint64_t value = in.u64();
        if (off + width <= m.valid) {
          std::memcpy(m.base + off, &value, width);
          tampered = true;
        }
        break;
      }
      case 5: {  // truncate the file under both mappings, or grow it back (zeros)
        const bool grow = in.u8() & 1;
        const std::size_t to = grow ? m.size : (in.u32() % (m.size / format::kPageSize)) * format::kPageSize;
        if (::truncate(path.c_str(), static_cast<off_t>(to)) == 0) {
          m.valid = to;
          tampered = true;
        }
        break;
      }
      case 6: {  // the reader reopens the (possibly changed) file, as a restarted agent would
        auto again = SegmentReader::open(path, limits, reason, detail);
        if (!tampered) FUZZ_CHECK(again != nullptr, "untouched segment refused on reopen: %s", detail.c_str());
        if (again) {
          reader = std::move(again);
          // A new reader starts from the oldest readable record: counts restart.
          content_exact = false;
          tampered = true;
        }
        break;
      }
      default: {  // control block both ways, counters
        reader->set_flag("pause", in.u8());
        reader->heartbeat(in.u64());
        reader->boost_sampling(in.u16() % 1200, in.u64());
        (void)stream->flag_value("pause");
        (void)stream->flag_value(std::string(in.take(in.u8() % 40)));
        (void)reader->producer_counters();
        (void)reader->state();
        (void)reader->copy_recent(8, 64 << 10);
        break;
      }
    }
  }

  // Drain, then check exactness if nothing was changed behind the producer.
  for (int i = 0; i < 64; ++i) {
    const PollCounts c = reader->poll(seen);
    rows_read += c.rows;
    rows_lost += c.rows_overwritten;
    rows_invalid += c.rows_invalid;
    if (!c.more) break;
  }
  if (!tampered) {
    const StreamStats s = stream->stats();
    FUZZ_CHECK(s.rows_written == s.rows_committed + s.rows_sampled_out + s.rows_too_large + s.rows_bad_input +
                                     s.rows_no_lane + s.rows_no_ring,
               "producer counters do not add up");
    FUZZ_CHECK(rows_invalid == 0, "%llu rows invalid in an untouched ring", static_cast<unsigned long long>(rows_invalid));
    FUZZ_CHECK(rows_read + rows_lost == s.rows_committed, "read %llu + lost %llu != committed %llu",
               static_cast<unsigned long long>(rows_read), static_cast<unsigned long long>(rows_lost),
               static_cast<unsigned long long>(s.rows_committed));
    if (content_exact && rows_lost == 0 && written.size() < (8u << 20)) {
      FUZZ_CHECK(seen.payload == written, "reader saw other bytes than the producer wrote (%zu vs %zu)",
                 seen.payload.size(), written.size());
    }
  }
  stream.reset();  // closes: state closed, file removed
  (void)reader->state();
  (void)reader->poll(seen);
  (void)reader->unread_committed_rows();
  ::unlink(path.c_str());
  return 0;
}
