#include "agent/ingest/segment.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "agent/ingest/guarded_memory.hpp"
#include "mltap/naming.hpp"

namespace mltap::ingest {

using core::InvalidReason;
using core::ProducerId;
using core::SegmentIdentity;

using namespace mltap::format;

namespace {

// A NUL-terminated string inside a fixed field, or nullopt.
std::optional<std::string> fixed_string(const char* field, std::size_t cap) {
  const void* nul = std::memchr(field, '\0', cap);
  if (!nul) return std::nullopt;
  return std::string(field, static_cast<const char*>(nul) - field);
}

// Why a step of SegmentReader::open refused the segment; nullopt when it passed.
struct Rejection {
  RejectReason reason;
  std::string detail;
};
using Check = std::optional<Rejection>;

Check io_error(const char* call) {
  return Rejection{RejectReason::io_error, std::string(call) + ": " + std::strerror(errno)};
}

// Step 1: a regular file of a plausible size, mapped read-write (the control block is written).
Check map_file(const std::string& path, const ReaderLimits& limits, std::uint8_t*& base,
               std::uint64_t& size, FileFacts& facts) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return io_error("open");
  struct stat st {};
  Check bad;
  if (::fstat(fd, &st) != 0) {
    bad = io_error("fstat");
  } else if (!S_ISREG(st.st_mode)) {
    bad = Rejection{RejectReason::not_regular_file, "not a regular file"};
  } else if (static_cast<std::uint64_t>(st.st_size) < 3 * kPageSize) {
    bad = Rejection{RejectReason::too_small, "file is " + std::to_string(st.st_size) + " bytes"};
  } else if (static_cast<std::uint64_t>(st.st_size) > limits.max_segment_bytes) {
    bad = Rejection{RejectReason::too_large, "file is " + std::to_string(st.st_size) + " bytes, limit " +
                                                 std::to_string(limits.max_segment_bytes)};
  }
  if (bad) {
    ::close(fd);
    return bad;
  }
  size = static_cast<std::uint64_t>(st.st_size);
  // Of this descriptor, so of the file mapped: what the trust check compares with the producer.
  facts.dev = static_cast<std::uint64_t>(st.st_dev);
  facts.ino = static_cast<std::uint64_t>(st.st_ino);
  facts.uid = static_cast<std::uint32_t>(st.st_uid);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return io_error("mmap");
  base = static_cast<std::uint8_t*>(p);
  return std::nullopt;
}

// Step 2: the header is ours (magic, byte order, ABI, word size) and describes this file.
Check read_header(const std::uint8_t* base, std::uint64_t size, SegmentHeader& h) {
  std::uint64_t magic = 0;
  if (!guarded_load(reinterpret_cast<const std::uint64_t*>(base), magic)) {
    return Rejection{RejectReason::truncated, "file shrank while reading the header"};
  }
  if (magic != kSegmentMagic) {
    char b[17];
    std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(magic));
    return Rejection{RejectReason::bad_magic, std::string("magic is 0x") + b};
  }
  if (!guarded_copy(&h, base, sizeof h)) {
    return Rejection{RejectReason::truncated, "file shrank while reading the header"};
  }
  if (h.endian_marker != kEndianMarker) {
    return Rejection{RejectReason::endianness, "written by a CPU of the other byte order"};
  }
  if (h.abi_major != kAbiMajor) {
    return Rejection{RejectReason::abi_mismatch, "ABI " + std::to_string(h.abi_major) + "." +
                                                     std::to_string(h.abi_minor) + ", this agent reads ABI " +
                                                     std::to_string(kAbiMajor) + ".x"};
  }
  if (h.word_bits != 64 || h.header_bytes < sizeof(SegmentHeader) || h.header_bytes > kPageSize) {
    return Rejection{RejectReason::bad_layout, "header size or word size not understood"};
  }
  if (h.segment_bytes != size) {
    return Rejection{RejectReason::bad_layout,
                     "header says " + std::to_string(h.segment_bytes) + " bytes, file has " + std::to_string(size)};
  }
  return std::nullopt;
}

// Step 3: ring parameters in range, and every region offset where the parameters put it.
Check check_layout(const SegmentHeader& h) {
  if (!is_pow2(h.data_bytes) || h.data_bytes < (64u << 10) || h.data_bytes > (1ull << 30) ||
      !is_pow2(h.index_entries) || h.index_entries > (1u << 24) || h.lane_count == 0 ||
      h.lane_count > kMaxLanes || h.max_record_bytes < sizeof(RecordHeader) ||
      h.max_record_bytes > h.data_bytes || h.schema_bytes > (64ull << 20)) {
    return Rejection{RejectReason::bad_layout, "ring parameters out of range"};
  }
  const Layout l = compute_layout(h.schema_bytes, h.lane_count, h.index_entries, h.data_bytes);
  if (l.schema_bytes != h.schema_bytes || l.control_offset != h.control_offset ||
      l.schema_offset != h.schema_offset || l.lanes_offset != h.lanes_offset ||
      l.lane_stride != h.lane_stride || l.index_offset != h.index_offset ||
      l.data_offset != h.data_offset || l.segment_bytes != h.segment_bytes) {
    return Rejection{RejectReason::bad_layout, "region offsets disagree with the ring parameters"};
  }
  const auto state = h.state;
  if (state != static_cast<std::uint32_t>(SegmentState::ready) &&
      state != static_cast<std::uint32_t>(SegmentState::closed)) {
    return Rejection{RejectReason::bad_layout, "state " + std::to_string(state) + " not understood"};
  }
  return std::nullopt;
}

// Step 4: who wrote it and what it declares (names, kind, dtype, shape, producer).
Check read_identity(const SegmentHeader& h, SegmentIdentity& id) {
  auto name = fixed_string(h.stream_name, sizeof h.stream_name);
  if (!name || !naming::valid_stream_name(*name)) {
    return Rejection{RejectReason::bad_identity, "stream name missing or invalid"};
  }
  auto component = fixed_string(h.component, sizeof h.component);
  if (!component || !naming::valid_component(*component)) {
    return Rejection{RejectReason::bad_identity, "component invalid for stream '" + *name + "'"};
  }
  auto sdk = fixed_string(h.sdk, sizeof h.sdk);
  if (h.kind == 0 || h.kind > kStreamKindMax) {
    return Rejection{RejectReason::bad_identity, "unknown stream kind " + std::to_string(h.kind)};
  }
  if ((h.declared_dtype != 0 && !dtype_valid(h.declared_dtype)) || h.declared_ndim > kMaxRowDims) {
    return Rejection{RejectReason::bad_identity, "declared dtype or shape invalid"};
  }
  id.stream = *name;
  id.component = *component;
  id.sdk = sdk && naming::valid_label_text(*sdk, 31) ? *sdk : "unknown";
  id.kind = static_cast<StreamKind>(h.kind);
  id.declared_dtype = static_cast<DType>(h.declared_dtype);
  id.declared_shape.assign(h.declared_shape, h.declared_shape + h.declared_ndim);
  id.producer = ProducerId{h.producer_pid, h.producer_start_ticks};
  id.uid = h.producer_uid;
  id.pid_ns_inode = h.pid_ns_inode;
  id.created_unix_ns = h.created_unix_ns;
  id.lane_count = h.lane_count;
  id.data_bytes = h.data_bytes;
  id.sampling_budget = h.sampling_budget;
  return std::nullopt;
}

// Step 5: the feature names of the schema region, each in bounds and printable, as many as the
// declared row shape has elements.
Check read_feature_names(const SegmentHeader& h, const std::uint8_t* base, SegmentIdentity& id) {
  if (h.feature_count > kMaxFeatures) {
    return Rejection{RejectReason::bad_schema, "feature_count " + std::to_string(h.feature_count)};
  }
  if (h.feature_count == 0) return std::nullopt;
  std::vector<std::uint8_t> schema(h.schema_bytes);
  if (!guarded_copy(schema.data(), base + h.schema_offset, schema.size())) {
    return Rejection{RejectReason::truncated, "file shrank while reading the schema"};
  }
  SchemaHeader sh{};
  std::memcpy(&sh, schema.data(), sizeof sh);
  const std::uint64_t refs_end = sizeof sh + std::uint64_t{sh.feature_count} * sizeof(NameRef);
  if (sh.feature_count != h.feature_count || refs_end + sh.strings_bytes > schema.size()) {
    return Rejection{RejectReason::bad_schema, "feature table does not fit its region"};
  }
  const char* strings = reinterpret_cast<const char*>(schema.data() + refs_end);
  for (std::uint32_t i = 0; i < sh.feature_count; ++i) {
    NameRef ref{};
    std::memcpy(&ref, schema.data() + sizeof sh + i * sizeof(NameRef), sizeof ref);
    if (std::uint64_t{ref.offset} + ref.length > sh.strings_bytes) {
      return Rejection{RejectReason::bad_schema, "feature name " + std::to_string(i) + " out of bounds"};
    }
    std::string f(strings + ref.offset, ref.length);
    if (!naming::valid_label_text(f, 127)) {
      return Rejection{RejectReason::bad_schema, "feature name " + std::to_string(i) + " invalid"};
    }
    id.feature_names.push_back(std::move(f));
  }
  // Names are Prometheus label values: two equal ones would give duplicate series (the SDK
  // refuses them at open; a hostile file may still hold them).
  std::vector<std::string_view> sorted(id.feature_names.begin(), id.feature_names.end());
  std::sort(sorted.begin(), sorted.end());
  if (auto dup = std::adjacent_find(sorted.begin(), sorted.end()); dup != sorted.end()) {
    return Rejection{RejectReason::bad_schema, "feature name '" + std::string(*dup) + "' declared twice"};
  }
  std::uint64_t elems = 1;
  for (auto d : id.declared_shape) elems *= d;
  if (!id.declared_shape.empty() && elems != id.feature_names.size()) {
    return Rejection{RejectReason::bad_schema, "feature names do not match the declared row shape"};
  }
  return std::nullopt;
}

// Step 6 (ABI 1.1; nothing in 1.0 segments): the artifact paths, NUL-separated, each a valid
// absolute path.
Check read_artifacts(const SegmentHeader& h, const std::uint8_t* base, SegmentIdentity& id) {
  if (h.artifacts_bytes == 0) return std::nullopt;
  if (std::uint64_t{h.artifacts_offset} + h.artifacts_bytes > h.schema_bytes ||
      h.artifacts_bytes > kMaxArtifacts * kArtifactPathMax) {
    return Rejection{RejectReason::bad_schema, "artifact list does not fit the schema region"};
  }
  std::string list(h.artifacts_bytes, '\0');
  if (!guarded_copy(list.data(), base + h.schema_offset + h.artifacts_offset, list.size())) {
    return Rejection{RejectReason::truncated, "file shrank while reading the artifact list"};
  }
  if (list.back() != '\0') return Rejection{RejectReason::bad_schema, "artifact list not terminated"};
  std::size_t start = 0;
  while (start < list.size()) {
    const std::size_t end = list.find('\0', start);
    std::string path = list.substr(start, end - start);
    if (!naming::valid_artifact_path(path) || id.artifacts.size() >= kMaxArtifacts) {
      return Rejection{RejectReason::bad_schema, "artifact " + std::to_string(id.artifacts.size()) + " invalid"};
    }
    id.artifacts.push_back(std::move(path));
    start = end + 1;
  }
  return std::nullopt;
}

// Step 7 (ABI 2.1; zero in older segments): a predictions stream's task and the name of its
// labels stream, in the schema region.
Check read_performance(const SegmentHeader& h, const std::uint8_t* base, SegmentIdentity& id) {
  if (h.task > kTaskMax) {
    return Rejection{RejectReason::bad_identity, "unknown task " + std::to_string(h.task)};
  }
  id.task = static_cast<Task>(h.task);
  if (h.labels_stream_bytes == 0) return std::nullopt;
  if (std::uint64_t{h.labels_stream_offset} + h.labels_stream_bytes > h.schema_bytes ||
      h.labels_stream_bytes >= kStreamNameMax) {
    return Rejection{RejectReason::bad_schema, "labels stream name does not fit the schema region"};
  }
  std::string name(h.labels_stream_bytes, '\0');
  if (!guarded_copy(name.data(), base + h.schema_offset + h.labels_stream_offset, name.size())) {
    return Rejection{RejectReason::truncated, "file shrank while reading the labels stream name"};
  }
  if (!naming::valid_stream_name(name)) {
    return Rejection{RejectReason::bad_schema, "labels stream name invalid"};
  }
  id.labels_stream = std::move(name);
  return std::nullopt;
}

}  // namespace

// Each step trusts only what the steps before it checked; the first refusal ends the open (the
// destructor unmaps what was mapped).
std::unique_ptr<SegmentReader> SegmentReader::open(const std::string& path, const ReaderLimits& limits,
                                                   RejectReason& reason, std::string& detail) {
  install_sigbus_guard();
  std::unique_ptr<SegmentReader> r(new SegmentReader());
  r->path_ = path;
  r->limits_ = limits;
  Check bad = map_file(path, limits, r->base_, r->size_, r->file_);
  if (!bad) bad = read_header(r->base_, r->size_, r->header_);
  if (!bad) bad = check_layout(r->header_);
  if (!bad) bad = read_identity(r->header_, r->identity_);
  if (!bad) bad = read_feature_names(r->header_, r->base_, r->identity_);
  if (!bad) bad = read_artifacts(r->header_, r->base_, r->identity_);
  if (!bad) bad = read_performance(r->header_, r->base_, r->identity_);
  if (bad) {
    reason = bad->reason;
    detail = std::move(bad->detail);
    return nullptr;
  }
  const SegmentHeader& h = r->header_;
  r->lanes_.resize(h.lane_count);
  for (std::uint32_t i = 0; i < h.lane_count; ++i) {
    std::uint8_t* lane = r->base_ + h.lanes_offset + std::uint64_t{i} * h.lane_stride;
    r->lanes_[i].header = lane;
    r->lanes_[i].index = lane + h.index_offset;
    r->lanes_[i].data = lane + h.data_offset;
  }
  return r;
}

SegmentReader::~SegmentReader() {
  if (base_) ::munmap(base_, size_);
}

namespace {
const std::uint64_t* lane_word(std::uint8_t* lane, std::size_t offset) {
  return reinterpret_cast<const std::uint64_t*>(lane + offset);
}
}  // namespace

// Copies record `seq` of `lane` into `buf`. Returns false with lost=true when the producer has
// overwritten it (before or during the copy), false with lost=false when the mapping faulted.
bool SegmentReader::read_record(Lane& lane, std::uint64_t seq, std::vector<std::uint8_t>& buf,
                                IndexEntry& e, bool& lost, Unread& unread) {
  lost = false;
  unread = Unread::none;
  const std::uint64_t ring = header_.data_bytes;
  const std::uint64_t entries = header_.index_entries;
  std::uint64_t reserve_seq = 0, reserve_pos = 0;
  if (!guarded_load(lane_word(lane.header, offsetof(LaneHeader, reserve_seq)), reserve_seq) ||
      !guarded_load(lane_word(lane.header, offsetof(LaneHeader, reserve_pos)), reserve_pos)) {
    return false;
  }
  if (reserve_seq > seq + entries) {  // the index slot has been reused
    lost = true;
    return false;
  }
  if (!guarded_copy(&e, lane.index + (seq & (entries - 1)) * sizeof(IndexEntry), sizeof e)) {
    return false;
  }
  if (e.seq != seq || e.pos + ring < reserve_pos) {
    lost = true;
    return false;
  }
  if (e.size < sizeof(RecordHeader) || e.size > header_.max_record_bytes ||
      e.pos % kRecordAlign != 0) {
    // Not lost and not readable: counted as bad_index. Keep buf empty.
    buf.clear();
    unread = Unread::bad_index;
    return true;
  }
  if (e.size > limits_.max_record_bytes) {  // within the header's bound, over ours
    buf.clear();
    unread = Unread::too_large;
    return true;
  }
  buf.resize(e.size);
  const std::uint64_t off = e.pos & (ring - 1);
  const std::uint64_t first = std::min<std::uint64_t>(e.size, ring - off);
  if (!guarded_copy(buf.data(), lane.data + off, first)) return false;
  if (first < e.size && !guarded_copy(buf.data() + first, lane.data, e.size - first)) return false;
  std::atomic_thread_fence(std::memory_order_acquire);
  // Seqlock check: had the producer begun to overwrite any byte we copied, or the index slot?
  if (!guarded_load(lane_word(lane.header, offsetof(LaneHeader, reserve_seq)), reserve_seq,
                    std::memory_order_relaxed) ||
      !guarded_load(lane_word(lane.header, offsetof(LaneHeader, reserve_pos)), reserve_pos,
                    std::memory_order_relaxed)) {
    return false;
  }
  if (reserve_seq > seq + entries || e.pos + ring < reserve_pos) {
    lost = true;
    return false;
  }
  return true;
}

bool SegmentReader::validate_record(const IndexEntry& e, std::span<const std::uint8_t> bytes,
                                    RecordView& v, InvalidReason& why, std::uint32_t lane_no) {
  if (bytes.size() < sizeof(RecordHeader) || e.rows == 0) {
    why = InvalidReason::bad_index;
    return false;
  }
  RecordHeader rh{};
  std::memcpy(&rh, bytes.data(), sizeof rh);
  if (rh.seq != e.seq || rh.rows != e.rows) {
    why = InvalidReason::bad_header;
    return false;
  }
  if (!dtype_valid(rh.dtype)) {
    why = InvalidReason::bad_dtype;
    return false;
  }
  if (rh.ndim == 0 || rh.ndim > kMaxRowDims || (rh.flags & ~kRecordHasTraceIds) != 0) {
    why = InvalidReason::bad_shape;
    return false;
  }
  std::uint64_t elems = 1;
  for (std::uint32_t d = 0; d < rh.ndim; ++d) {
    if (rh.dims[d] == 0) {
      why = InvalidReason::bad_shape;
      return false;
    }
    elems *= rh.dims[d];
    if (elems > header_.max_record_bytes) {
      why = InvalidReason::bad_shape;
      return false;
    }
  }
  const bool has_ids = (rh.flags & kRecordHasTraceIds) != 0;
  const std::uint64_t ids_bytes = has_ids ? std::uint64_t{rh.rows} * 8 : 0;
  // rows x row bytes can pass 2^64 (2^31 rows of 2^30 float64 in a 1 GiB ring) and wrap to a
  // size that matches a short record: bound it by the record size before multiplying.
  const std::uint64_t row_bytes = elems * dtype_size(static_cast<DType>(rh.dtype));  // <= 2^33
  if (rh.rows > header_.max_record_bytes / row_bytes) {
    why = InvalidReason::bad_size;
    return false;
  }
  const std::uint64_t payload = std::uint64_t{rh.rows} * row_bytes;
  if (rh.payload_bytes != payload || rh.payload_offset != sizeof(RecordHeader) + ids_bytes ||
      std::uint64_t{rh.payload_offset} + payload != e.size || e.size != bytes.size()) {
    why = InvalidReason::bad_size;
    return false;
  }
  std::memcpy(dims_, rh.dims, sizeof dims_);
  v.lane = lane_no;
  v.seq = rh.seq;
  v.timestamp_ns = rh.timestamp_ns;
  v.rows = rh.rows;
  v.dtype = static_cast<DType>(rh.dtype);
  v.row_shape = std::span<const std::uint32_t>(dims_, rh.ndim);
  v.row_elements = elems;
  // Trace ids start at offset 64 of a buffer from std::vector (16-byte aligned): 8-aligned.
  v.trace_ids = has_ids ? std::span<const std::uint64_t>(
                              reinterpret_cast<const std::uint64_t*>(bytes.data() + sizeof rh), rh.rows)
                        : std::span<const std::uint64_t>();
  v.payload = bytes.subspan(rh.payload_offset, payload);
  return true;
}

PollCounts SegmentReader::poll(RecordVisitor& visitor) {
  PollCounts c;
  if (!healthy_) return c;
  const std::uint64_t entries = header_.index_entries;
  for (std::uint32_t li = 0; li < lanes_.size(); ++li) {
    Lane& lane = lanes_[li];
    std::uint64_t commit = 0;
    if (!guarded_load(lane_word(lane.header, offsetof(LaneHeader, commit_seq)), commit)) {
      healthy_ = false;
      return c;
    }
    if (commit == lane.next_seq) continue;
    if (commit < lane.next_seq) {
      // The producer's counter went backwards: nothing it says about this lane is reliable.
      c.records_invalid[static_cast<std::size_t>(InvalidReason::seq_regressed)]++;
      lane.next_seq = commit;
      continue;
    }
    // Records older than the index can describe are gone; rows_before of the next readable
    // record tells how many rows they held.
    if (commit - lane.next_seq > entries) lane.next_seq = commit - entries;
    std::uint64_t budget = limits_.max_records_per_poll;
    while (lane.next_seq < commit) {
      if (budget-- == 0) {
        c.more = true;
        break;
      }
      const std::uint64_t seq = lane.next_seq++;
      IndexEntry e{};
      bool lost = false;
      Unread unread = Unread::none;
      if (!read_record(lane, seq, buf_, e, lost, unread)) {
        if (lost) continue;
        healthy_ = false;
        return c;
      }
      lane.read_pos = e.pos + e.size;
      c.bytes += e.size;
      // Exact loss accounting from the producer's running row count.
      if (e.rows_before > lane.rows_accounted) {
        c.rows_overwritten += e.rows_before - lane.rows_accounted;
        lane.rows_accounted = e.rows_before;
      }
      RecordView view;
      InvalidReason why{};
      if (buf_.empty() || !validate_record(e, buf_, view, why, li)) {
        if (buf_.empty()) why = unread == Unread::too_large ? InvalidReason::too_large : InvalidReason::bad_index;
        c.records_invalid[static_cast<std::size_t>(why)]++;
        c.rows_invalid += e.rows;  // the producer's own claim, as used by rows_before
        lane.rows_accounted += e.rows;
        continue;
      }
      lane.rows_accounted += view.rows;
      c.records++;
      c.rows += view.rows;
      visitor.on_record(view);
    }
  }
  return c;
}

bool SegmentReader::backlog_reached(double share) noexcept {
  if (!healthy_) return false;
  const double ring = static_cast<double>(header_.data_bytes) * share;
  const double entries = static_cast<double>(header_.index_entries) * share;
  for (Lane& lane : lanes_) {
    std::uint64_t commit = 0, next_pos = 0;
    if (!guarded_load(lane_word(lane.header, offsetof(LaneHeader, commit_seq)), commit) ||
        !guarded_load(lane_word(lane.header, offsetof(LaneHeader, next_pos)), next_pos)) {
      return true;
    }
    if (commit == lane.next_seq) continue;
    if (commit < lane.next_seq || lane.read_pos == 0 || next_pos < lane.read_pos) return true;
    if (static_cast<double>(commit - lane.next_seq) >= entries ||
        static_cast<double>(next_pos - lane.read_pos) >= ring) {
      return true;
    }
  }
  return false;
}

std::optional<ProducerCounters> SegmentReader::producer_counters() {
  if (!healthy_) return std::nullopt;
  ProducerCounters pc;
  for (auto& lane : lanes_) {
    LaneHeader lh{};
    if (!guarded_copy(&lh, lane.header, sizeof lh)) {
      healthy_ = false;
      return std::nullopt;
    }
    if (lh.claims == 0 && lh.rows_written == 0) continue;
    pc.lanes_used += lh.claims != 0 ? 1 : 0;  // lanes any thread has written through
    pc.rows_written += lh.rows_written;
    pc.rows_sampled_out += lh.rows_sampled_out;
    pc.rows_committed += lh.rows_committed;
    pc.rows_too_large += lh.rows_too_large;
    pc.rows_bad_input += lh.rows_bad_input;
  }
  std::uint64_t no_lane = 0;
  if (!guarded_load(&reinterpret_cast<const SegmentHeader*>(base_)->no_lane_rows, no_lane,
                    std::memory_order_relaxed)) {
    healthy_ = false;
    return std::nullopt;
  }
  pc.rows_no_lane = no_lane;
  pc.rows_written += no_lane;
  return pc;
}

std::optional<SegmentState> SegmentReader::state() {
  if (!healthy_) return std::nullopt;
  std::uint32_t s = 0;
  if (!guarded_copy(&s, base_ + offsetof(SegmentHeader, state), sizeof s)) {
    healthy_ = false;
    return std::nullopt;
  }
  if (s == static_cast<std::uint32_t>(SegmentState::closed)) return SegmentState::closed;
  return SegmentState::ready;
}

std::uint64_t SegmentReader::unread_committed_rows() {
  std::uint64_t unread = 0;
  for (auto& lane : lanes_) {
    std::uint64_t committed = 0;
    if (!guarded_load(lane_word(lane.header, offsetof(LaneHeader, rows_committed)), committed,
                      std::memory_order_relaxed)) {
      healthy_ = false;
      return unread;
    }
    if (committed > lane.rows_accounted) {
      unread += committed - lane.rows_accounted;
      lane.rows_accounted = committed;
    }
  }
  return unread;
}

std::uint64_t SegmentReader::interrupted_rows() {
  std::uint64_t interrupted = 0;
  for (auto& lane : lanes_) {
    LaneHeader lh{};
    if (!guarded_copy(&lh, lane.header, sizeof lh)) {
      healthy_ = false;
      return interrupted;
    }
    // rows_accounted: read, invalid or overwritten; it may exceed the header's rows_committed
    // when the producer died between the commit and storing its counters.
    const std::uint64_t settled =
        lane.rows_accounted + lh.rows_sampled_out + lh.rows_too_large + lh.rows_bad_input;
    if (lh.rows_written > settled) interrupted += lh.rows_written - settled;
  }
  return interrupted;
}

std::vector<SegmentReader::LanePosition> SegmentReader::positions() const {
  std::vector<LanePosition> out;
  out.reserve(lanes_.size());
  for (const auto& lane : lanes_) out.push_back({lane.next_seq, lane.rows_accounted});
  return out;
}

bool SegmentReader::restore_positions(const std::vector<LanePosition>& saved) {
  if (!healthy_ || saved.size() != lanes_.size()) return false;
  for (std::size_t i = 0; i < lanes_.size(); ++i) {
    std::uint64_t commit = 0, committed_rows = 0;
    if (!guarded_load(lane_word(lanes_[i].header, offsetof(LaneHeader, commit_seq)), commit) ||
        !guarded_load(lane_word(lanes_[i].header, offsetof(LaneHeader, rows_committed)), committed_rows,
                      std::memory_order_relaxed)) {
      healthy_ = false;
      return false;
    }
    if (saved[i].next_seq > commit || saved[i].rows_accounted > committed_rows) return false;
  }
  for (std::size_t i = 0; i < lanes_.size(); ++i) {
    lanes_[i].next_seq = saved[i].next_seq;
    lanes_[i].rows_accounted = saved[i].rows_accounted;
  }
  return true;
}

bool SegmentReader::heartbeat(std::uint64_t now_unix_ns) {
  if (!healthy_) return false;
  auto* ctl = reinterpret_cast<ControlBlock*>(base_ + header_.control_offset);
  if (!guarded_store(&ctl->agent_heartbeat_unix_ns, now_unix_ns)) {
    healthy_ = false;
    return false;
  }
  return true;
}

bool SegmentReader::set_flag(const std::string& name, std::uint32_t value) {
  if (!healthy_ || name.empty() || name.size() >= kFlagNameMax) return false;
  auto* ctl = reinterpret_cast<ControlBlock*>(base_ + header_.control_offset);
  ControlBlock copy{};
  if (!guarded_copy(&copy, ctl, sizeof copy)) {
    healthy_ = false;
    return false;
  }
  int slot = -1, free_slot = -1;
  for (std::uint32_t i = 0; i < kControlFlags; ++i) {
    auto n = fixed_string(copy.flags[i].name, kFlagNameMax);
    if (n && *n == name) {
      slot = static_cast<int>(i);
      break;
    }
    if (free_slot < 0 && copy.flags[i].name[0] == '\0') free_slot = static_cast<int>(i);
  }
  if (slot < 0) slot = free_slot;
  if (slot < 0) return false;
  // Seqlock write: odd generation while changing (the producer retries or reads 0).
  const std::uint64_t g = copy.generation | 1;
  if (!guarded_store(&ctl->generation, g)) return healthy_ = false;
  std::atomic_thread_fence(std::memory_order_release);
  char padded[kFlagNameMax] = {};
  std::memcpy(padded, name.data(), name.size());
  const bool ok = guarded_copy(ctl->flags[slot].name, padded, sizeof padded) &&
                  guarded_store32(&ctl->flags[slot].value, value) &&
                  guarded_store(&ctl->generation, g + 1);
  if (!ok) healthy_ = false;
  return ok;
}

bool SegmentReader::boost_sampling(std::uint32_t permille, std::uint64_t until_unix_ns) {
  if (!healthy_ || permille > 1000) return false;
  auto* ctl = reinterpret_cast<ControlBlock*>(base_ + header_.control_offset);
  const bool ok = guarded_store(&ctl->sampling_boost_until_unix_ns, until_unix_ns) &&
                  guarded_store32(&ctl->sampling_boost_permille, permille);
  if (!ok) healthy_ = false;
  return ok;
}

std::vector<SegmentReader::RawCopy> SegmentReader::copy_recent(std::size_t max_records,
                                                               std::size_t max_bytes) {
  std::vector<RawCopy> out;
  if (!healthy_) return out;
  std::vector<std::uint8_t> buf;
  std::size_t bytes = 0;
  for (std::uint32_t li = 0; li < lanes_.size() && out.size() < max_records; ++li) {
    Lane& lane = lanes_[li];
    std::uint64_t commit = 0;
    if (!guarded_load(lane_word(lane.header, offsetof(LaneHeader, commit_seq)), commit)) break;
    std::uint64_t seq = commit;
    while (seq > 0 && out.size() < max_records && commit - seq < header_.index_entries) {
      --seq;
      IndexEntry e{};
      bool lost = false;
      Unread unread = Unread::none;
      if (!read_record(lane, seq, buf, e, lost, unread)) break;
      RecordView v;
      InvalidReason why{};
      if (buf.empty() || !validate_record(e, buf, v, why, li)) continue;
      if (bytes + v.payload.size() > max_bytes) break;
      bytes += v.payload.size();
      RawCopy rc{li, v.seq, v.timestamp_ns, v.dtype,
                 std::vector<std::uint32_t>(v.row_shape.begin(), v.row_shape.end()), v.rows,
                 std::vector<std::uint64_t>(v.trace_ids.begin(), v.trace_ids.end()),
                 std::vector<std::uint8_t>(v.payload.begin(), v.payload.end())};
      out.push_back(std::move(rc));
    }
  }
  std::sort(out.begin(), out.end(),
            [](const RawCopy& a, const RawCopy& b) { return a.timestamp_ns < b.timestamp_ns; });
  return out;
}

}  // namespace mltap::ingest
