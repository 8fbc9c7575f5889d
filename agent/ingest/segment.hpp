// One producer's ring segment, as the agent sees it: mapped, validated field by field against the
// file it came from, and read lane by lane with the protocol of shm/FORMAT.md. Nothing the
// producer wrote is trusted: a bad header rejects the segment, a bad record is counted and
// skipped, a truncated file ends the segment. None of it throws or crashes.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/batch.hpp"
#include "agent/ingest/trust.hpp"
#include "core/ingest_state.hpp"
#include "mltap/format.hpp"

namespace mltap::ingest {

// Why a segment was refused (metric label `reason`).
enum class RejectReason {
  not_regular_file,
  too_small,
  too_large,
  bad_magic,
  abi_mismatch,
  endianness,
  bad_layout,       // sizes/offsets disagree with the file or with each other
  bad_identity,     // stream name, component, kind invalid
  bad_schema,       // feature names region malformed
  io_error,         // open/fstat/mmap failed
  truncated,        // the file shrank under the mapping (SIGBUS)
};
constexpr std::string_view reject_reason_name(RejectReason r) noexcept {
  switch (r) {
    case RejectReason::not_regular_file: return "not_regular_file";
    case RejectReason::too_small: return "too_small";
    case RejectReason::too_large: return "too_large";
    case RejectReason::bad_magic: return "bad_magic";
    case RejectReason::abi_mismatch: return "abi_mismatch";
    case RejectReason::endianness: return "endianness";
    case RejectReason::bad_layout: return "bad_layout";
    case RejectReason::bad_identity: return "bad_identity";
    case RejectReason::bad_schema: return "bad_schema";
    case RejectReason::io_error: return "io_error";
    case RejectReason::truncated: return "truncated";
  }
  return "unknown";
}

// A validated record, valid until the next call into the SegmentReader.
struct RecordView {
  std::uint32_t lane = 0;
  std::uint64_t seq = 0;
  std::uint64_t timestamp_ns = 0;
  std::uint32_t rows = 0;
  format::DType dtype = format::DType::invalid;
  std::span<const std::uint32_t> row_shape;
  std::uint64_t row_elements = 0;
  std::span<const std::uint64_t> trace_ids;  // empty or rows
  std::span<const std::uint8_t> payload;     // rows * row_elements * dtype size
};

// What one poll found, in rows unless named otherwise.
struct PollCounts {
  std::uint64_t records = 0;
  std::uint64_t rows = 0;
  std::uint64_t rows_overwritten = 0;  // lost because the producer lapped the reader
  std::uint64_t records_invalid[core::kInvalidReasonCount] = {};
  std::uint64_t rows_invalid = 0;
  std::uint64_t bytes = 0;             // ring bytes of the records read (valid or not)
  bool more = false;                   // stopped at the per-poll budget; poll again soon
};

// Producer-side counters summed over lanes (exact, as the producer counted them).
struct ProducerCounters {
  std::uint64_t rows_written = 0;
  std::uint64_t rows_sampled_out = 0;
  std::uint64_t rows_committed = 0;
  std::uint64_t rows_too_large = 0;
  std::uint64_t rows_bad_input = 0;
  std::uint64_t rows_no_lane = 0;
  std::uint32_t lanes_used = 0;
};

class RecordVisitor {
 public:
  virtual ~RecordVisitor() = default;
  virtual void on_record(const RecordView& record) = 0;
};

struct ReaderLimits {
  std::uint64_t max_segment_bytes = 8ull << 30;
  // Records larger than this are refused unread (InvalidReason::too_large), whatever the header's
  // max_record_bytes (up to half the ring) allows: the reader copies each record into a buffer of
  // its segment that grows to the largest record read.
  std::uint64_t max_record_bytes = 64ull << 20;
  std::uint64_t max_records_per_poll = 1u << 16;  // per lane
};

class SegmentReader {
 public:
  // Opens and validates. On failure returns nullptr and sets `reason` and `detail`.
  static std::unique_ptr<SegmentReader> open(const std::string& path, const ReaderLimits& limits,
                                             RejectReason& reason, std::string& detail);
  ~SegmentReader();
  SegmentReader(const SegmentReader&) = delete;
  SegmentReader& operator=(const SegmentReader&) = delete;

  const core::SegmentIdentity& identity() const noexcept { return identity_; }
  const std::string& path() const noexcept { return path_; }
  // Device, inode and owner of the file mapped (fstat of the descriptor it was mapped from).
  const FileFacts& file() const noexcept { return file_; }
  // Keeps only the artifact paths the agent may watch for this producer.
  void set_artifacts(std::vector<std::string> artifacts) { identity_.artifacts = std::move(artifacts); }
  // For a segment read as history (its producer ended unverified): the header's pid and start
  // time are claims nobody checked, so they are not passed on.
  void forget_producer() noexcept {
    identity_.producer = core::ProducerId{};
    identity_.artifacts.clear();
  }
  // False once the mapping faulted (file truncated): the segment is finished.
  bool healthy() const noexcept { return healthy_; }

  // Reads new records of every lane, handing each valid one to `visitor`.
  PollCounts poll(RecordVisitor& visitor);
  // Whether a lane's unread backlog reached `share` (0..1] of its data ring or of its index:
  // one load of each lane's publication line, nothing copied. The producer's words are
  // untrusted; whatever does not add up (a position behind the reader's, a lane never read)
  // answers true, so that poll(), which checks everything, decides. False also when nothing is
  // pending; true when the mapping faulted (poll() then finds the fault).
  bool backlog_reached(double share) noexcept;
  // Summed producer counters; nullopt if the mapping faulted.
  std::optional<ProducerCounters> producer_counters();
  // SegmentState as the producer last set it; nullopt if the mapping faulted.
  std::optional<format::SegmentState> state();
  // After the producer is gone and the ring is drained: rows committed but never read.
  std::uint64_t unread_committed_rows();
  // After unread_committed_rows(), for a producer that died: rows its lanes counted as written
  // but never committed nor counted as sampled out, too large or bad input (it was killed inside
  // a write, between counting the rows and committing them).
  std::uint64_t interrupted_rows();

  // Where the reader is in each lane: kept in the state directory so that a restarted agent
  // resumes there instead of reading (and counting) the ring again (issue 11).
  struct LanePosition {
    std::uint64_t next_seq = 0;
    std::uint64_t rows_accounted = 0;
  };
  std::vector<LanePosition> positions() const;
  // Resumes at `saved` (one per lane). Refused (false, nothing changed) when the lane count
  // differs or a position lies beyond what the producer has committed: then it is not this
  // ring's past and the ring is read from its start as usual.
  bool restore_positions(const std::vector<LanePosition>& saved);

  // Control block (agent -> producer). All return false when the mapping faulted or no slot.
  bool heartbeat(std::uint64_t now_unix_ns);
  bool set_flag(const std::string& name, std::uint32_t value);
  bool boost_sampling(std::uint32_t permille, std::uint64_t until_unix_ns);
  // Copies up to `max_records` newest readable records per lane (for incident bundles).
  struct RawCopy {
    std::uint32_t lane;
    std::uint64_t seq;
    std::uint64_t timestamp_ns;
    format::DType dtype;
    std::vector<std::uint32_t> row_shape;
    std::uint32_t rows;
    std::vector<std::uint64_t> trace_ids;
    std::vector<std::uint8_t> payload;
  };
  std::vector<RawCopy> copy_recent(std::size_t max_records, std::size_t max_bytes);

 private:
  SegmentReader() = default;
  struct Lane {
    std::uint8_t* header = nullptr;  // LaneHeader in the mapping
    std::uint8_t* index = nullptr;
    std::uint8_t* data = nullptr;
    std::uint64_t next_seq = 0;          // next record to read
    std::uint64_t rows_accounted = 0;    // rows read + invalid + overwritten in this lane
    std::uint64_t read_pos = 0;          // end of the last record read (bytes); 0: none yet
  };
  // Which cause an entry that read_record could not copy (empty buffer, true returned) has.
  enum class Unread { none, bad_index, too_large };
  bool read_record(Lane& lane, std::uint64_t seq, std::vector<std::uint8_t>& buf,
                   format::IndexEntry& entry, bool& lost, Unread& unread);
  bool validate_record(const format::IndexEntry& e, std::span<const std::uint8_t> bytes,
                       RecordView& view, core::InvalidReason& why, std::uint32_t lane_no);

  std::string path_;
  FileFacts file_;
  std::uint8_t* base_ = nullptr;
  std::uint64_t size_ = 0;
  format::SegmentHeader header_{};  // validated copy
  core::SegmentIdentity identity_;
  ReaderLimits limits_;
  std::vector<Lane> lanes_;
  std::vector<std::uint8_t> buf_;  // grows to the largest record read; not reserved per segment
  std::uint32_t dims_[format::kMaxRowDims] = {};
  bool healthy_ = true;
};

}  // namespace mltap::ingest
