// mltap shared-memory ring format, ABI 2. The layout is the contract between producer SDKs and
// mltapd; shm/FORMAT.md is its prose description and must change with this file.
//
// Everything here is plain data (standard layout, fixed-width fields, explicit padding) so that a
// segment written by one compiler/language can be read by another. Fields that are written by one
// process while another reads them are accessed through std::atomic_ref only.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

namespace mltap::format {

inline constexpr std::uint64_t kSegmentMagic = 0x474E5250'41544C4DULL;  // "MLTAPRNG" little-endian
// Readers reject other majors. 2.0: the lane header's commit word and reservation words live on
// separate cache lines (the reader polls the reservation per record; the writer stores the
// commit per record), and reservations are announced ahead (FORMAT.md, "Write protocol").
inline constexpr std::uint32_t kAbiMajor = 2;
inline constexpr std::uint32_t kAbiMinor = 1;  // additive changes only; 2.1: task, labels stream
inline constexpr std::uint32_t kEndianMarker = 0x01020304;
inline constexpr std::uint32_t kPageSize = 4096;
inline constexpr std::uint32_t kRecordAlign = 64;
inline constexpr std::uint32_t kMaxLanes = 256;
inline constexpr std::uint32_t kMaxRowDims = 6;
inline constexpr std::uint32_t kStreamNameMax = 128;  // bytes incl. NUL
inline constexpr std::uint32_t kComponentMax = 64;
inline constexpr std::uint32_t kNamespaceMax = 32;
inline constexpr std::uint32_t kMaxFeatures = 65536;
inline constexpr std::uint32_t kControlFlags = 32;
inline constexpr std::uint32_t kFlagNameMax = 32;
inline constexpr std::uint32_t kMaxArtifacts = 16;
inline constexpr std::uint32_t kArtifactPathMax = 1024;  // bytes incl. NUL
inline constexpr std::string_view kSegmentPrefix = "mltap.";  // file: mltap.<ns>.<pid>.<n>

// The trace-id sampling hash (splitmix64's finalizer; "Sampling" in FORMAT.md): a producer keeps
// a row with trace id `id` iff trace_id_hash(id) <= share * 2^64. Here, not in the SDK's sources,
// because the agent's retained samples decide with the same hash: the same ids are kept
// everywhere, so joins by trace id survive sampling.
constexpr std::uint64_t trace_id_hash(std::uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

enum class DType : std::uint16_t {
  invalid = 0,
  float32 = 1,
  float64 = 2,
  int32 = 3,
  int64 = 4,
  uint8 = 5,
  boolean = 6,  // one byte, 0 or 1
  float16 = 7,  // IEEE 754 binary16
  bfloat16 = 8,
  int8 = 9,
  int16 = 10,
  uint16 = 11,
  uint32 = 12,
  uint64 = 13,
};
inline constexpr std::uint16_t kDTypeMax = 13;

constexpr std::uint32_t dtype_size(DType t) noexcept {
  switch (t) {
    case DType::float32: case DType::int32: case DType::uint32: return 4;
    case DType::float64: case DType::int64: case DType::uint64: return 8;
    case DType::uint8: case DType::boolean: case DType::int8: return 1;
    case DType::float16: case DType::bfloat16: case DType::int16: case DType::uint16: return 2;
    case DType::invalid: return 0;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) noexcept {
  switch (t) {
    case DType::float32: return "float32";
    case DType::float64: return "float64";
    case DType::int32: return "int32";
    case DType::int64: return "int64";
    case DType::uint8: return "uint8";
    case DType::boolean: return "bool";
    case DType::float16: return "float16";
    case DType::bfloat16: return "bfloat16";
    case DType::int8: return "int8";
    case DType::int16: return "int16";
    case DType::uint16: return "uint16";
    case DType::uint32: return "uint32";
    case DType::uint64: return "uint64";
    case DType::invalid: return "invalid";
  }
  return "invalid";
}

constexpr bool dtype_valid(std::uint16_t raw) noexcept { return raw >= 1 && raw <= kDTypeMax; }

// What a stream carries; detectors pick their defaults from it.
enum class StreamKind : std::uint16_t {
  features = 1,
  predictions = 2,
  labels = 3,
  embeddings = 4,
  raw = 5,
};
inline constexpr std::uint16_t kStreamKindMax = 5;

constexpr std::string_view stream_kind_name(StreamKind k) noexcept {
  switch (k) {
    case StreamKind::features: return "features";
    case StreamKind::predictions: return "predictions";
    case StreamKind::labels: return "labels";
    case StreamKind::embeddings: return "embeddings";
    case StreamKind::raw: return "raw";
  }
  return "raw";
}

// What a predictions stream predicts (ABI 2.1): how the agent scores it against its labels.
enum class Task : std::uint32_t {
  none = 0,        // not declared (the agent's configuration may say)
  binary = 1,      // one score per row (P(positive)), or two (the second is P(positive))
  multiclass = 2,  // one value per class (the predicted class is the largest), or the class index
  regression = 3,  // one value per row
};
inline constexpr std::uint32_t kTaskMax = 3;

constexpr std::string_view task_name(Task t) noexcept {
  switch (t) {
    case Task::binary: return "binary";
    case Task::multiclass: return "multiclass";
    case Task::regression: return "regression";
    case Task::none: return "none";
  }
  return "none";
}

enum class SegmentState : std::uint32_t {
  creating = 0,  // header not complete; readers wait
  ready = 1,
  closed = 2,  // producer closed the stream cleanly; reader drains then may unlink
};

enum class ClockKind : std::uint32_t {
  realtime_coarse = 1,  // CLOCK_REALTIME_COARSE: ~6 ns to read, jiffy resolution
  realtime = 2,         // CLOCK_REALTIME: ~30 ns to read, ns resolution
};

// ---------------------------------------------------------------------------------------------
// Segment header: page 0. Written once by the producer before `state` becomes ready, then only
// the liveness field changes. The reader copies it and validates every field against the file.
struct SegmentHeader {
  std::uint64_t magic;           // kSegmentMagic, stored last (release) when the segment is ready
  std::uint32_t abi_major;
  std::uint32_t abi_minor;
  std::uint32_t endian_marker;   // kEndianMarker as written by the producer's CPU
  std::uint32_t header_bytes;    // sizeof(SegmentHeader)
  std::uint32_t word_bits;       // 64
  std::uint32_t state;           // SegmentState (atomic)
  std::uint64_t segment_bytes;   // the whole file; readers compare with fstat
  // Regions, all page aligned, all within segment_bytes.
  std::uint64_t control_offset;  // ControlBlock
  std::uint64_t schema_offset;   // feature names: see SchemaHeader
  std::uint64_t schema_bytes;
  std::uint64_t lanes_offset;
  std::uint64_t lane_stride;     // bytes from one lane to the next
  std::uint32_t lane_count;
  std::uint32_t index_entries;   // per lane; power of two
  std::uint64_t index_offset;    // within a lane
  std::uint64_t data_offset;     // within a lane
  std::uint64_t data_bytes;      // per lane; power of two, multiple of kRecordAlign
  std::uint64_t max_record_bytes;
  // Producer identity. pid/start_time are the liveness key (pid alone is reused).
  std::uint32_t producer_pid;
  std::uint32_t producer_uid;
  std::uint64_t producer_start_ticks;  // /proc/<pid>/stat field 22 (clock ticks after boot)
  std::uint64_t pid_ns_inode;          // the producer's pid namespace; liveness is only
                                       // judged by readers in the same namespace
  std::uint64_t created_unix_ns;
  std::uint32_t clock;                 // ClockKind of record timestamps
  std::uint32_t clock_resolution_ns;
  // Stream identity and declared schema.
  char stream_name[kStreamNameMax];    // NUL terminated, validated by readers
  char component[kComponentMax];
  char sdk[32];                        // e.g. "cpp/0.1.0", "python/0.1.0"
  std::uint16_t kind;                  // StreamKind
  std::uint16_t declared_dtype;        // DType or 0 = any
  std::uint32_t declared_ndim;         // row dims, 0 = any
  std::uint32_t declared_shape[kMaxRowDims];
  std::uint32_t feature_count;         // names in the schema region
  std::uint32_t sampling_budget;       // rows per second before sampling, 0 = unlimited
  std::uint32_t reserved0;
  std::uint64_t no_lane_rows;          // writes lost because every lane was taken (atomic)
  // ABI 1.1: files the stream's output depends on (models, vocabularies), declared by the
  // producer: NUL-separated absolute paths at this offset of the schema region (0 bytes = none).
  // The agent watches them for changes and relates the changes to the stream's findings.
  std::uint32_t artifacts_offset;
  std::uint32_t artifacts_bytes;
  // ABI 2.1: a predictions stream's task (Task) and the name of the stream that carries its
  // labels (kind labels, joined by trace id): labels_stream_bytes characters, no NUL, at
  // labels_stream_offset of the schema region (0 bytes = none). Zero in 2.0 segments.
  std::uint32_t task;
  std::uint32_t labels_stream_offset;
  std::uint32_t labels_stream_bytes;
  std::uint32_t reserved1;
  std::uint64_t reserved[29];          // zero; room for later minor versions
};
static_assert(std::is_standard_layout_v<SegmentHeader>);
static_assert(sizeof(SegmentHeader) <= kPageSize);

// Feature names: SchemaHeader, then feature_count NameRef entries, then the string bytes.
struct SchemaHeader {
  std::uint32_t feature_count;
  std::uint32_t strings_bytes;
};
struct NameRef {
  std::uint32_t offset;  // from the start of the string area
  std::uint32_t length;  // bytes, no NUL
};
static_assert(sizeof(NameRef) == 8);

// ---------------------------------------------------------------------------------------------
// Control block: page 1, written by the agent (reactions), read by the producer. The producer
// treats it as untrusted like the agent treats the rest.
struct ControlFlag {
  char name[kFlagNameMax];   // NUL terminated; empty = unused slot
  std::uint32_t value;       // atomic
  std::uint32_t reserved;
};
struct ControlBlock {
  std::uint64_t generation;          // atomic; bumped by the agent after any change
  std::uint32_t sampling_boost_permille;  // 0 = none; otherwise keep at least this share
  std::uint32_t reserved0;
  std::uint64_t sampling_boost_until_unix_ns;
  std::uint64_t agent_heartbeat_unix_ns;  // the agent reading this segment writes it every
                                          // second; a producer closing its stream leaves the
                                          // file to a live agent to drain, else unlinks it
  std::uint64_t reserved[12];
  ControlFlag flags[kControlFlags];
};
static_assert(sizeof(ControlBlock) <= kPageSize);

// ---------------------------------------------------------------------------------------------
// Lane: one writer at a time (a thread owns a lane). Layout: LaneHeader, index, data ring.
// Each group of words has a cache line of its own, ordered by who touches it how often: the
// writer stores line 0 and line 3 on every record, the reader loads line 1 on every record and
// line 0 once per poll, line 3 once per snapshot. Were the reader's per-record loads on the
// line the writer stores per record, every record would move that line between the two cores.
struct alignas(64) LaneHeader {
  // Cache line 0: publication, written by the owner on every record.
  std::uint64_t commit_seq;    // records [0, commit_seq) are complete (release)
  std::uint64_t next_pos;      // where the next record starts (lane hand-over)
  std::uint64_t pad0[6];
  // Cache line 1: reservation, written by the owner before the bytes it covers and only when a
  // record would cross it (about every 1/16 of the ring); loaded by the reader per record.
  std::uint64_t reserve_seq;   // records with seq + index_entries < reserve_seq may be overwritten
  std::uint64_t reserve_pos;   // bytes before reserve_pos - data_bytes may be overwritten
  std::uint64_t pad1[6];
  // Cache line 2: ownership.
  std::uint32_t owner_tid;     // 0 = free; CAS by threads claiming the lane
  std::uint32_t reserved1;
  std::uint64_t claims;        // how many threads have owned this lane
  std::uint64_t pad2[6];
  // Cache line 3: exact producer counters, in rows, written by the owner only.
  std::uint64_t rows_written;      // every row passed to write(), sampled or not
  std::uint64_t rows_sampled_out;
  std::uint64_t rows_committed;    // rows in committed records
  std::uint64_t rows_too_large;    // dropped: record larger than max_record_bytes
  std::uint64_t rows_bad_input;    // dropped: dtype/shape the SDK refused
  std::uint64_t records_committed;
  std::uint64_t bytes_committed;
  std::uint64_t pad3;
};
static_assert(sizeof(LaneHeader) == 256);
static_assert(offsetof(LaneHeader, reserve_seq) == 64 && offsetof(LaneHeader, owner_tid) == 128 &&
              offsetof(LaneHeader, rows_written) == 192);

// Reservations run ahead of the writer by 1/2^kReserveAheadShift of the ring and of the index,
// so that the reservation line changes rarely; a reader sees records that recent as overwritten.
inline constexpr unsigned kReserveAheadShift = 4;

struct IndexEntry {
  std::uint64_t seq;   // record sequence number this entry describes
  std::uint64_t pos;   // absolute byte position (ring offset = pos & (data_bytes - 1))
  std::uint32_t size;  // bytes including header, trace ids and payload, before alignment
  std::uint32_t rows;
  std::uint64_t rows_before;  // rows committed in this lane before this record: a reader that
                              // skips overwritten records counts exactly how many rows it lost
};
static_assert(sizeof(IndexEntry) == 32);

// A record in the data ring, kRecordAlign aligned. It may wrap around the end of the ring.
enum RecordFlags : std::uint8_t {
  kRecordHasTraceIds = 1u << 0,  // rows x uint64 trace ids follow the header
};
struct RecordHeader {
  std::uint64_t seq;
  std::uint64_t timestamp_ns;   // unix ns, clock per SegmentHeader::clock
  std::uint32_t rows;
  std::uint32_t payload_bytes;
  std::uint16_t dtype;
  std::uint8_t ndim;            // dims of one row, <= kMaxRowDims
  std::uint8_t flags;           // RecordFlags
  std::uint32_t payload_offset; // from the record start; >= sizeof(RecordHeader)
  std::uint32_t dims[kMaxRowDims];
  std::uint32_t reserved[2];
};
static_assert(sizeof(RecordHeader) == 64);

constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) noexcept {
  return (v + a - 1) / a * a;
}
constexpr bool is_pow2(std::uint64_t v) noexcept { return v != 0 && (v & (v - 1)) == 0; }

// Computed layout for given parameters; the producer writes it into the header, the reader
// recomputes it from the header's own parameters and demands equality.
struct Layout {
  std::uint64_t control_offset = kPageSize;
  std::uint64_t schema_offset = 2 * kPageSize;
  std::uint64_t schema_bytes = 0;
  std::uint64_t lanes_offset = 0;
  std::uint64_t lane_stride = 0;
  std::uint64_t index_offset = 0;
  std::uint64_t data_offset = 0;
  std::uint64_t segment_bytes = 0;
};

constexpr Layout compute_layout(std::uint64_t schema_bytes_needed, std::uint32_t lane_count,
                                std::uint32_t index_entries, std::uint64_t data_bytes) noexcept {
  Layout l;
  l.schema_bytes = align_up(schema_bytes_needed == 0 ? 1 : schema_bytes_needed, kPageSize);
  l.lanes_offset = l.schema_offset + l.schema_bytes;
  l.index_offset = kPageSize;  // lane header gets a page of its own
  l.data_offset = align_up(l.index_offset + std::uint64_t{index_entries} * sizeof(IndexEntry),
                           kPageSize);
  l.lane_stride = align_up(l.data_offset + data_bytes, kPageSize);
  l.segment_bytes = l.lanes_offset + l.lane_stride * lane_count;
  return l;
}

// Record byte size (before alignment) for a record of `rows` rows.
constexpr std::uint64_t record_bytes(std::uint64_t rows, std::uint64_t payload_bytes,
                                     bool trace_ids) noexcept {
  return sizeof(RecordHeader) + (trace_ids ? rows * 8 : 0) + payload_bytes;
}

}  // namespace mltap::format
