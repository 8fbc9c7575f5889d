#include "agent/retention/store.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "core/log.hpp"
#include <nlohmann/json.hpp>

#include "agent/retention/record_file.hpp"

namespace mltap::retention {
namespace {

using core::RetentionDrop;

constexpr std::uint32_t kNoSlot = ~0u;
constexpr std::size_t kRowHeaderBytes = 32;  // id, timestamp, seen, slot, flags, values

std::uint64_t wall_now() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

std::uint64_t fnv1a(std::string_view s) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

// A directory name for a stream: readable, and unique by the hash of the exact name.
std::string dir_name(const std::string& stream) {
  std::string out;
  for (char c : stream) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-') ? c : '_';
  char hex[20];
  std::snprintf(hex, sizeof hex, ".%016llx", static_cast<unsigned long long>(fnv1a(stream)));
  return out + hex;
}

bool make_dir(const std::string& path) {
  return ::mkdir(path.c_str(), 0700) == 0 || errno == EEXIST;
}

std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> out;
  DIR* d = ::opendir(path.c_str());
  if (!d) return out;
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

struct Row {
  std::uint64_t trace_id = 0;
  std::uint64_t timestamp_ns = 0;
  std::uint32_t offset = 0;  // into Bucket::values
  std::uint32_t slot = kNoSlot;  // its reservoir slot when it arrived (rewritten as it came)
  std::uint16_t cols = 0;
  bool has_id = false;
  bool live = true;  // false: replaced in the reservoir
};

struct Bucket {
  std::uint64_t start = 0;
  std::vector<Row> rows;
  std::vector<double> values;
  std::uint64_t bytes = 0;  // of its frames (replaced rows included), written or not yet
  std::uint64_t live = 0;
  std::uint64_t seen_without_id = 0;     // rows without trace id offered (the reservoir's n)
  std::vector<std::uint32_t> reservoir;  // slot -> row
  std::string path;                      // empty: memory only
  // The file holds a prefix of the frames: the meta frame, then rows[0, rows_written). What a
  // full or read-only file system refused stays in memory and is appended, in order, when it
  // takes writes again (so the file always replays to a prefix of the bucket).
  std::uint64_t file_bytes = 0;
  std::uint32_t rows_written = 0;
  // Rows of rows[0, rows_written) replaced in place since (a reservoir slot's newer row): each is
  // appended again as a row frame with its slot, after the rows, so that a replay, which
  // replaces the slot's row the same way, rebuilds what memory holds.
  std::vector<std::uint32_t> rewrites;
  std::size_t rewrites_written = 0;
  bool meta_written = false;
  bool needs_cut = false;  // may end in a torn frame: cut to file_bytes before appending
  bool synced() const noexcept { return file_bytes == bytes && !needs_cut; }
};

struct Location {
  std::uint64_t bucket = 0;
  std::uint32_t row = 0;
};

struct StreamData {
  StreamMeta meta;
  std::string dir;  // empty: memory only
  std::map<std::uint64_t, Bucket> buckets;
  std::unordered_map<std::uint64_t, Location> index;
  std::uint64_t bytes = 0;
  std::uint64_t records = 0;
  AppendFile file;  // of the bucket written last
  std::uint64_t file_bucket = 0;
};

std::string meta_payload(const StreamMeta& m, std::uint64_t bucket_start) {
  nlohmann::json j{{"stream", m.name},
                   {"component", m.component},
                   {"kind", static_cast<int>(m.kind)},
                   {"task", static_cast<int>(m.task)},
                   {"labels_stream", m.labels_stream},
                   {"features", m.feature_names},
                   {"bucket_start", bucket_start}};
  return j.dump();
}

std::optional<std::pair<StreamMeta, std::uint64_t>> parse_meta(std::span<const std::byte> p) {
  const auto j =
      nlohmann::json::parse(reinterpret_cast<const char*>(p.data()),
                            reinterpret_cast<const char*>(p.data()) + p.size(), nullptr, false);
  if (!j.is_object()) return std::nullopt;
  try {
    StreamMeta m;
    m.name = j.at("stream").get<std::string>();
    m.component = j.at("component").get<std::string>();
    m.kind = static_cast<format::StreamKind>(j.at("kind").get<int>());
    m.task = static_cast<format::Task>(j.at("task").get<int>());
    m.labels_stream = j.at("labels_stream").get<std::string>();
    m.feature_names = j.at("features").get<std::vector<std::string>>();
    if (m.name.empty() || m.name.size() >= format::kStreamNameMax) return std::nullopt;
    return std::make_pair(std::move(m), j.at("bucket_start").get<std::uint64_t>());
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// A row frame: id, timestamp, seen, slot, flags, column count, values.
std::vector<std::byte> row_payload(const Row& r, std::uint64_t seen, std::uint32_t slot,
                                   std::span<const double> values) {
  std::vector<std::byte> p(kRowHeaderBytes + values.size() * sizeof(double));
  auto* b = p.data();
  const std::uint16_t flags = r.has_id ? 1 : 0;
  const auto cols = static_cast<std::uint16_t>(values.size());
  std::memcpy(b, &r.trace_id, 8);
  std::memcpy(b + 8, &r.timestamp_ns, 8);
  std::memcpy(b + 16, &seen, 8);
  std::memcpy(b + 24, &slot, 4);
  std::memcpy(b + 28, &flags, 2);
  std::memcpy(b + 30, &cols, 2);
  if (!values.empty()) std::memcpy(b + 32, values.data(), values.size() * sizeof(double));
  return p;
}

}  // namespace

struct RetentionStore::Impl {
  RetentionConfig config;
  std::string root;  // <state_dir>/retention; empty: memory only
  std::uint64_t keep_threshold = ~0ull;
  std::uint64_t now = 0;
  std::map<std::string, StreamData, std::less<>> streams;
  std::unordered_set<std::string> cut_streams;  // over max_streams (first 4096 remembered)
  std::uint64_t bytes = 0;
  std::uint64_t records = 0;
  std::uint64_t sampled_out = 0;
  std::uint64_t torn_bytes = 0;
  std::array<std::uint64_t, static_cast<std::size_t>(RetentionDrop::count_)> dropped{};
  std::map<std::string, std::unordered_set<std::uint64_t>, std::less<>> flags;
  std::uint64_t flag_count = 0;
  AppendFile flag_file;
  std::string flag_path;
  std::uint64_t flag_file_bytes = 0;
  bool flag_needs_cut = false;
  std::vector<std::pair<std::string, std::uint64_t>> unwritten_flags;
  bool replaying = false;  // reopening files: what they held was counted by the run that wrote it
  // Writing: a failure is logged when writing starts failing (or fails for another reason), not
  // per row; what the files lack is retried from on_tick at most once a second.
  bool failing = false;
  int failing_errno = 0;
  std::uint64_t unwritten = 0;  // sum of (bytes - file_bytes) over buckets with a file
  std::uint64_t last_retry = 0;
  std::vector<std::string> stale_files;  // evicted, but unlink failed: removed again later
  std::array<std::uint64_t, static_cast<std::size_t>(core::RetentionWriteError::count_)>
      write_failures{};

  void drop(RetentionDrop cause, std::uint64_t n = 1) {
    dropped[static_cast<std::size_t>(cause)] += n;
  }
  std::uint64_t bucket_of(std::uint64_t ts) const {
    const auto b = static_cast<std::uint64_t>(config.bucket.count());
    return ts - ts % b;
  }

  // --- the stream and bucket a row goes to -------------------------------------------------
  StreamData* stream_for(const core::StreamInfo& info) {
    if (auto it = streams.find(info.name); it != streams.end()) return &it->second;
    if (streams.size() >= config.max_streams) {
      if (cut_streams.size() < 4096 && cut_streams.insert(info.name).second) {
        core::log::warn("retention: stream '{}' not retained: retention.max_streams ({}) reached",
                     info.name, config.max_streams);
      }
      return nullptr;
    }
    StreamData& s = streams[info.name];
    s.meta = StreamMeta{info.name, info.component,     info.kind,
                        info.task, info.labels_stream, info.feature_names};
    if (!root.empty()) s.dir = root + "/" + dir_name(info.name);  // made when a file opens
    return &s;
  }

  // A new bucket in memory; its file is written by sync().
  Bucket& bucket_for(StreamData& s, std::uint64_t start) {
    auto [it, fresh] = s.buckets.try_emplace(start);
    Bucket& b = it->second;
    if (!fresh) return b;
    b.start = start;
    if (!s.dir.empty()) b.path = s.dir + "/" + std::to_string(start) + ".rlog";
    account(s, b, frame_bytes(meta_payload(s.meta, start).size()), false);
    return b;
  }

  // --- writing ------------------------------------------------------------------------------
  void account(StreamData& s, Bucket& b, std::uint64_t n, bool on_disk) {
    b.bytes += n;
    s.bytes += n;
    bytes += n;
    if (on_disk) {
      b.file_bytes += n;
    } else if (!b.path.empty()) {
      unwritten += n;
    }
  }

  void write_failed(const std::string& path, int err) {
    using core::RetentionWriteError;
    const auto cls = err == ENOSPC || err == EDQUOT ? RetentionWriteError::no_space
                     : err == EROFS                  ? RetentionWriteError::read_only
                                                     : RetentionWriteError::other;
    ++write_failures[static_cast<std::size_t>(cls)];
    if (!failing || err != failing_errno) {
      core::log::error(
          "retention: cannot write {}: {}; retained rows are held in memory and written when it "
          "works again (mltap_retention_unwritten_bytes, mltap_retention_dropped_total"
          "{{cause=\"write_error\"}})",
          path, std::strerror(err));
    }
    failing = true;
    failing_errno = err;
  }

  void maybe_recovered() {
    if (failing && unwritten == 0 && stale_files.empty() && unwritten_flags.empty()) {
      core::log::info("retention: writing to {} works again; every retained row is in its file",
                   root);
      failing = false;
      failing_errno = 0;
    }
  }

  bool open_file(StreamData& s, Bucket& b) {
    if (s.file.is_open() && s.file_bucket == b.start) return true;
    s.file.close();
    if (make_dir(s.dir) && s.file.open(b.path)) {
      s.file_bucket = b.start;
      return true;
    }
    write_failed(b.path, errno);
    return false;
  }

  bool write_frame(StreamData& s, Bucket& b, FrameType type, std::span<const std::byte> payload) {
    if (!open_file(s, b)) return false;
    if (b.needs_cut) {
      if (::truncate(b.path.c_str(), static_cast<off_t>(b.file_bytes)) != 0) {
        write_failed(b.path, errno);
        s.file.close();
        return false;
      }
      b.needs_cut = false;
    }
    if (!s.file.append(type, payload)) {
      write_failed(b.path, errno);
      b.needs_cut = true;  // append cut a short write off; if that failed too, cut it later
      s.file.close();
      return false;
    }
    const auto n = frame_bytes(payload.size());
    b.file_bytes += n;
    unwritten -= n;
    return true;
  }

  // Appends what the bucket holds and its file lacks, in order; false at the first failure.
  bool sync(StreamData& s, Bucket& b) {
    if (b.path.empty() || b.synced()) return true;
    if (!b.meta_written) {
      const std::string meta = meta_payload(s.meta, b.start);
      if (!write_frame(s, b, FrameType::meta, std::as_bytes(std::span(meta.data(), meta.size()))))
        return false;
      b.meta_written = true;
    }
    while (b.rows_written < b.rows.size()) {
      const Row& r = b.rows[b.rows_written];
      const auto payload =
          row_payload(r, b.seen_without_id, r.slot,
                      std::span<const double>(b.values).subspan(r.offset, r.cols));
      if (!write_frame(s, b, FrameType::row, payload)) return false;
      ++b.rows_written;
    }
    while (b.rewrites_written < b.rewrites.size()) {
      const Row& r = b.rows[b.rewrites[b.rewrites_written]];
      const auto payload =
          row_payload(r, b.seen_without_id, r.slot,
                      std::span<const double>(b.values).subspan(r.offset, r.cols));
      if (!write_frame(s, b, FrameType::row, payload)) return false;
      ++b.rewrites_written;
    }
    b.rewrites.clear();
    b.rewrites_written = 0;
    if (b.needs_cut) {  // nothing was left to append, yet a torn tail may remain
      if (::truncate(b.path.c_str(), static_cast<off_t>(b.file_bytes)) != 0) {
        write_failed(b.path, errno);
        return false;
      }
      b.needs_cut = false;
    }
    return true;
  }

  bool write_flag(const std::string& stream, std::uint64_t id) {
    if (flag_path.empty()) return true;
    if (!flag_file.is_open()) {
      if (flag_needs_cut) {
        if (::truncate(flag_path.c_str(), static_cast<off_t>(flag_file_bytes)) != 0) {
          write_failed(flag_path, errno);
          return false;
        }
        flag_needs_cut = false;
      }
      if (!flag_file.open(flag_path)) {
        write_failed(flag_path, errno);
        return false;
      }
    }
    std::vector<std::byte> p(8 + stream.size());
    std::memcpy(p.data(), &id, 8);
    std::memcpy(p.data() + 8, stream.data(), stream.size());
    if (!flag_file.append(FrameType::flag, p)) {
      write_failed(flag_path, errno);
      flag_file.close();
      flag_needs_cut = true;
      return false;
    }
    flag_file_bytes += frame_bytes(p.size());
    return true;
  }

  // From on_tick, at most once a second while something is unwritten: one failed write ends
  // the attempt (a full disk costs one write a second, not one per bucket).
  void retry(std::uint64_t now_ns) {
    if (!failing && unwritten == 0 && stale_files.empty() && unwritten_flags.empty()) return;
    if (now_ns >= last_retry && now_ns - last_retry < 1'000'000'000ull) return;
    last_retry = now_ns;
    while (!stale_files.empty()) {
      if (::unlink(stale_files.back().c_str()) != 0 && errno != ENOENT) return;
      stale_files.pop_back();
    }
    std::size_t done = 0;
    while (done < unwritten_flags.size() &&
           write_flag(unwritten_flags[done].first, unwritten_flags[done].second)) {
      ++done;
    }
    unwritten_flags.erase(unwritten_flags.begin(), unwritten_flags.begin() + done);
    if (!unwritten_flags.empty()) return;
    for (auto& [name, s] : streams) {
      for (auto& [start, b] : s.buckets) {
        if (!sync(s, b)) return;
      }
    }
    maybe_recovered();
  }

  // --- caps ---------------------------------------------------------------------------------
  void evict(StreamData& s, std::map<std::uint64_t, Bucket>::iterator it, RetentionDrop cause) {
    Bucket& b = it->second;
    for (std::uint32_t i = 0; i < b.rows.size(); ++i) {
      const Row& r = b.rows[i];
      if (!r.live || !r.has_id) continue;
      auto at = s.index.find(r.trace_id);
      if (at != s.index.end() && at->second.bucket == b.start && at->second.row == i)
        s.index.erase(at);
    }
    drop(cause, b.live);
    s.records -= b.live;
    records -= b.live;
    s.bytes -= b.bytes;
    bytes -= b.bytes;
    if (s.file_bucket == b.start) s.file.close();
    if (!b.path.empty()) {
      unwritten -= b.bytes - b.file_bytes;
      if (::unlink(b.path.c_str()) != 0 && errno != ENOENT && stale_files.size() < 65536) {
        stale_files.push_back(b.path);  // a read-only file system: removed when it works again
      }
    }
    s.buckets.erase(it);
  }

  // Frees room for `need` more bytes in `s` (never evicting bucket `keep`); false if it cannot.
  bool make_room(StreamData& s, std::uint64_t keep, std::uint64_t need) {
    while (s.bytes + need > config.max_stream_bytes) {
      auto oldest = s.buckets.begin();
      if (oldest == s.buckets.end() || oldest->first == keep) {
        return false;
      }
      core::log::debug("retention: '{}' over max_stream_bytes: bucket {} evicted", s.meta.name,
                    oldest->first);
      evict(s, oldest, RetentionDrop::stream_cap);
    }
    while (bytes + need > config.max_bytes) {
      StreamData* victim = nullptr;
      for (auto& [name, other] : streams) {
        if (other.buckets.empty()) continue;
        const auto first = other.buckets.begin()->first;
        if (&other == &s && first == keep) continue;
        if (!victim || first < victim->buckets.begin()->first) victim = &other;
      }
      if (!victim) return false;
      evict(*victim, victim->buckets.begin(), RetentionDrop::total_cap);
    }
    return true;
  }

  void age_out() {
    const auto max_age = static_cast<std::uint64_t>(config.max_age.count());
    const auto width = static_cast<std::uint64_t>(config.bucket.count());
    for (auto& [name, s] : streams) {
      while (!s.buckets.empty() && s.buckets.begin()->first + width + max_age < now)
        evict(s, s.buckets.begin(), RetentionDrop::max_age);
    }
  }

  // --- adding a row -------------------------------------------------------------------------
  void add_row(StreamData& s, const Row& proto, std::span<const double> values) {
    const auto max_age = static_cast<std::uint64_t>(config.max_age.count());
    if (proto.timestamp_ns + max_age < now) {
      drop(RetentionDrop::max_age);
      return;
    }
    const std::uint64_t start = bucket_of(proto.timestamp_ns);
    const std::uint64_t need = frame_bytes(kRowHeaderBytes + values.size() * sizeof(double));
    // Rows without trace id: which reservoir slot, if any (decided before the bucket exists, so
    // that a row the reservoir refuses creates no file).
    auto existing = s.buckets.find(start);
    std::uint64_t seen = (existing == s.buckets.end() ? 0 : existing->second.seen_without_id) + 1;
    std::uint32_t slot = kNoSlot;
    if (!proto.has_id) {
      const std::size_t held = existing == s.buckets.end() ? 0 : existing->second.reservoir.size();
      if (held < config.reservoir) {
        slot = static_cast<std::uint32_t>(held);
      } else {
        // Algorithm R with a hash of (stream, bucket, n) as its random number: reproducible.
        const std::uint64_t j =
            format::trace_id_hash(fnv1a(s.meta.name) ^ start ^ (seen * 0x9E3779B97F4A7C15ULL)) %
            seen;
        if (j >= config.reservoir) {
          if (existing != s.buckets.end()) existing->second.seen_without_id = seen;
          drop(RetentionDrop::reservoir);
          return;
        }
        slot = static_cast<std::uint32_t>(j);
      }
    }
    const std::uint64_t meta_bytes =
        existing == s.buckets.end() ? frame_bytes(meta_payload(s.meta, start).size()) : 0;
    if (!make_room(s, start, need + meta_bytes)) {
      drop(RetentionDrop::stream_cap);
      if (existing != s.buckets.end() && !proto.has_id) existing->second.seen_without_id = seen;
      return;
    }
    // While writing fails, a bucket whose file lags behind waits for retry() (its frames go in
    // order, a full disk costs one failed write a second); a new bucket tries at once.
    const bool try_write =
        existing == s.buckets.end() || existing->second.synced() || !failing;
    Bucket& b = bucket_for(s, start);
    account(s, b, need, false);
    insert(s, b, proto, values, seen, slot);
    if (b.path.empty()) return;
    if (try_write && sync(s, b)) {
      maybe_recovered();
    } else {
      drop(RetentionDrop::write_error);  // held in memory; written by retry() once it can be
    }
  }

  // The in-memory side of a row (also what a replay does with each row frame).
  void insert(StreamData& s, Bucket& b, const Row& r, std::span<const double> values,
              std::uint64_t seen, std::uint32_t slot) {
    if (!r.has_id) b.seen_without_id = std::max(b.seen_without_id, seen);
    if (!r.has_id && slot != kNoSlot && slot < b.reservoir.size()) {
      // A reservoir slot replaced. The new row takes the old one's place in memory (the old
      // one's bytes stay in the file; a replay does the same), so a bucket holds at most
      // `reservoir` rows without trace id however many arrive. Algorithm R replaces about
      // reservoir * ln(n / reservoir) rows of a busy bucket (4,100 a minute at 1,000 rows/s):
      // keeping them all made the heap ~5x what the live rows need (bench/soak: 50 streams
      // held 64 MiB of anonymous memory for 170,000 live rows of 4 values).
      if (!replaying) drop(RetentionDrop::reservoir);
      const std::uint32_t at = b.reservoir[slot];
      Row& old = b.rows[at];
      if (old.live && old.cols == values.size()) {
        std::copy(values.begin(), values.end(),
                  b.values.begin() + static_cast<std::ptrdiff_t>(old.offset));
        const std::uint32_t offset = old.offset;
        old = r;
        old.offset = offset;
        old.cols = static_cast<std::uint16_t>(values.size());
        old.slot = slot;
        old.live = true;
        // Its file already has the replaced row's frame: the new one is appended (sync). A row
        // not yet written (a full or read-only disk) is written once, with what it holds when its
        // turn comes: the frame accounted for the new row will never exist, so it is taken back.
        // Without a file (no state directory) nothing grows but memory, which holds the
        // reservoir: the new row's bytes are taken back too, so the caps count what is held.
        if (!replaying) {
          if (!b.path.empty() && at < b.rows_written) {
            b.rewrites.push_back(at);
          } else {
            const std::uint64_t n = frame_bytes(kRowHeaderBytes + values.size() * sizeof(double));
            b.bytes -= n;
            s.bytes -= n;
            bytes -= n;
            if (!b.path.empty()) unwritten -= n;
          }
        }
        return;
      }
      // A row of another width (the stream's schema changed within the bucket): appended, and
      // it keeps the slot (in memory and in its frame), so a replay retires the old row too.
      old.live = false;
      --b.live;
      --s.records;
      --records;
      b.reservoir[slot] = static_cast<std::uint32_t>(b.rows.size());
    }
    const auto index = static_cast<std::uint32_t>(b.rows.size());
    b.rows.push_back(r);
    b.rows.back().offset = static_cast<std::uint32_t>(b.values.size());
    b.rows.back().cols = static_cast<std::uint16_t>(values.size());
    b.rows.back().slot = r.has_id ? kNoSlot : slot;
    b.values.insert(b.values.end(), values.begin(), values.end());
    ++b.live;
    ++s.records;
    ++records;
    if (r.has_id) {
      s.index.try_emplace(r.trace_id, Location{b.start, index});  // the first one stays
      return;
    }
    if (slot != kNoSlot && slot >= b.reservoir.size()) b.reservoir.resize(slot + 1, index);
  }

  // --- reopening ----------------------------------------------------------------------------
  void reopen() {
    replaying = true;
    for (const auto& d : list_dir(root)) {
      const std::string dir = root + "/" + d;
      struct stat st {};
      if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
      for (const auto& f : list_dir(dir)) {
        if (f.size() < 6 || f.compare(f.size() - 5, 5, ".rlog") != 0) continue;
        reopen_file(dir, dir + "/" + f);
      }
    }
    replaying = false;
    age_out();
    // The caps may have shrunk since the files were written.
    for (auto& [name, s] : streams) make_room(s, ~0ull, 0);
    make_room_total();
    if (records > 0) {
      core::log::info("retention: {} rows of {} streams reopened from {} ({} bytes)", records,
                   streams.size(), root, bytes);
    }
  }

  void make_room_total() {
    while (bytes > config.max_bytes) {
      StreamData* victim = nullptr;
      for (auto& [name, other] : streams) {
        if (!other.buckets.empty() &&
            (!victim || other.buckets.begin()->first < victim->buckets.begin()->first))
          victim = &other;
      }
      if (!victim) return;
      evict(*victim, victim->buckets.begin(), RetentionDrop::total_cap);
    }
  }

  void reopen_file(const std::string& dir, const std::string& path) {
    StreamData* s = nullptr;
    Bucket* b = nullptr;
    const auto r = replay(path, [&](FrameType type, std::span<const std::byte> p) {
      if (!s) {  // the first frame names the stream and the bucket
        if (type != FrameType::meta) return false;
        auto meta = parse_meta(p);
        if (!meta) return false;
        auto it = streams.find(meta->first.name);
        if (it == streams.end()) {
          if (streams.size() >= config.max_streams) return false;
          it = streams.emplace(meta->first.name, StreamData{}).first;
          it->second.meta = meta->first;
          it->second.dir = dir;
        }
        s = &it->second;
        auto [bit, fresh] = s->buckets.try_emplace(meta->second);
        if (!fresh) return false;  // two files claim one bucket: keep the first
        b = &bit->second;
        b->start = meta->second;
        b->path = path;
        b->meta_written = true;
        account(*s, *b, frame_bytes(p.size()), true);
        return true;
      }
      if (type != FrameType::row || p.size() < kRowHeaderBytes) return false;
      Row row;
      std::uint64_t seen = 0;
      std::uint32_t slot = 0;
      std::uint16_t flags = 0, cols = 0;
      std::memcpy(&row.trace_id, p.data(), 8);
      std::memcpy(&row.timestamp_ns, p.data() + 8, 8);
      std::memcpy(&seen, p.data() + 16, 8);
      std::memcpy(&slot, p.data() + 24, 4);
      std::memcpy(&flags, p.data() + 28, 2);
      std::memcpy(&cols, p.data() + 30, 2);
      row.has_id = (flags & 1) != 0;
      if (p.size() != kRowHeaderBytes + cols * sizeof(double)) return false;
      if (slot != kNoSlot && (row.has_id || slot > b->reservoir.size())) return false;
      std::vector<double> values(cols);
      if (cols) std::memcpy(values.data(), p.data() + kRowHeaderBytes, cols * sizeof(double));
      account(*s, *b, frame_bytes(p.size()), true);
      insert(*s, *b, row, values, seen, slot);
      // Every row held so far is in the file. Not a count of frames: a frame that replaced a
      // reservoir row in place adds none, and counting it would leave later rows of this
      // bucket (sync writes from rows_written on) never written.
      b->rows_written = b->rows.size();
      return true;
    });
    torn_bytes += r.torn_bytes;
    if (r.torn_bytes > 0) {
      core::log::warn("retention: {}: {} bytes of a torn or corrupt tail cut", path, r.torn_bytes);
    }
    if (b && r.cut_failed) b->needs_cut = true;  // read-only: cut before the next append
    if (!s && r.opened) {
      core::log::warn("retention: {} holds no retained rows of a known stream: removed", path);
      ::unlink(path.c_str());
    }
  }
};

bool keeps_trace_id(std::uint64_t trace_id, double keep_share) noexcept {
  if (keep_share >= 1.0) return true;
  const auto threshold = static_cast<std::uint64_t>(std::ldexp(keep_share, 64));
  return format::trace_id_hash(trace_id) <= threshold;
}

RetentionStore::RetentionStore(RetentionConfig config, const std::string& state_dir,
                               std::uint64_t now_unix_ns)
    : impl_(std::make_unique<Impl>()) {
  impl_->config = std::move(config);
  impl_->now = now_unix_ns ? now_unix_ns : wall_now();
  if (state_dir.empty()) return;
  const std::string root = state_dir + "/retention";
  if (!make_dir(state_dir) || !make_dir(root)) {
    core::log::error("retention: cannot create {}: {}; retained samples are kept in memory only", root,
                  std::strerror(errno));
    return;
  }
  impl_->root = root;
  impl_->reopen();
  impl_->flag_path = root + "/flags.rlog";
  const auto r = replay(impl_->flag_path, [this](FrameType t, std::span<const std::byte> p) {
    if (t != FrameType::flag || p.size() < 9) return false;
    std::uint64_t id = 0;
    std::memcpy(&id, p.data(), 8);
    const std::string stream(reinterpret_cast<const char*>(p.data()) + 8, p.size() - 8);
    if (impl_->flag_count < impl_->config.max_flags && impl_->flags[stream].insert(id).second)
      ++impl_->flag_count;
    return true;
  });
  impl_->torn_bytes += r.torn_bytes;
  impl_->flag_file_bytes = r.good_bytes;
  impl_->flag_needs_cut = r.cut_failed;  // opened (and cut) at the first flag
}

RetentionStore::~RetentionStore() = default;

const RetentionConfig& RetentionStore::config() const noexcept { return impl_->config; }

void RetentionStore::on_batch(const core::DecodedBatch& batch) {
  if (!batch.stream || batch.backlog || batch.rows == 0) return;
  std::unique_lock lock(mutex_);
  Impl& im = *impl_;
  StreamData* s = im.stream_for(*batch.stream);
  if (!s) {
    im.drop(RetentionDrop::max_streams, batch.rows);
    return;
  }
  if (batch.cols > im.config.max_row_values || batch.cols > 0xFFFF) {
    im.drop(RetentionDrop::too_wide, batch.rows);
    return;
  }
  for (std::size_t r = 0; r < batch.rows; ++r) {
    Row row;
    row.timestamp_ns = batch.timestamp_ns;
    if (!batch.trace_ids.empty()) {
      row.has_id = true;
      row.trace_id = batch.trace_ids[r];
      if (!keeps_trace_id(row.trace_id, im.config.keep_share)) {
        ++im.sampled_out;
        continue;
      }
    }
    im.add_row(*s, row, batch.values.subspan(r * batch.cols, batch.cols));
  }
}

void RetentionStore::on_tick(std::uint64_t now_unix_ns) {
  std::unique_lock lock(mutex_);
  impl_->now = now_unix_ns;
  impl_->age_out();
  impl_->retry(now_unix_ns);
}

core::RetentionStats RetentionStore::stats() const {
  std::shared_lock lock(mutex_);
  const Impl& im = *impl_;
  core::RetentionStats out;
  out.persistent = !im.root.empty();
  out.bytes = im.bytes;
  out.records = im.records;
  out.sampled_out = im.sampled_out;
  out.torn_bytes = im.torn_bytes;
  out.dropped = im.dropped;
  out.flagged = im.flag_count;
  out.write_failing = im.failing;
  out.unwritten_bytes = im.unwritten;
  out.write_failures = im.write_failures;
  for (const auto& [name, s] : im.streams) {
    for (const auto& [start, b] : s.buckets) {
      out.memory_bytes += b.rows.capacity() * sizeof(Row) + b.values.capacity() * sizeof(double) +
                          b.reservoir.capacity() * sizeof(std::uint32_t);
    }
    out.streams.push_back({name, s.bytes, s.records, s.buckets.size(),
                           s.buckets.empty() ? 0 : s.buckets.begin()->first});
  }
  return out;
}

FlagResult RetentionStore::flag(const std::string& stream, std::span<const std::uint64_t> ids,
                                std::uint64_t /*now_unix_ns*/) {
  std::unique_lock lock(mutex_);
  Impl& im = *impl_;
  FlagResult r;
  auto& set = im.flags[stream];
  bool write_ok = im.unwritten_flags.empty();  // flags go to their file in order
  for (const auto id : ids) {
    if (set.count(id)) {
      ++r.already;
      continue;
    }
    if (im.flag_count >= im.config.max_flags) {
      ++r.refused;
      continue;
    }
    if (write_ok) write_ok = im.write_flag(stream, id);
    if (!write_ok && im.unwritten_flags.size() < im.config.max_flags) {
      im.unwritten_flags.emplace_back(stream, id);  // written by retry()
    }
    set.insert(id);
    ++im.flag_count;
    ++r.added;
  }
  if (set.empty()) im.flags.erase(stream);
  return r;
}

RetentionStore::View RetentionStore::read() const { return View(*impl_, mutex_); }

std::vector<const StreamMeta*> RetentionStore::View::streams() const {
  std::vector<const StreamMeta*> out;
  for (const auto& [name, s] : impl_->streams) out.push_back(&s.meta);
  return out;
}

const StreamMeta* RetentionStore::View::meta(const std::string& stream) const {
  const auto it = impl_->streams.find(stream);
  return it == impl_->streams.end() ? nullptr : &it->second.meta;
}

std::optional<RetainedRow> RetentionStore::View::find(const std::string& stream,
                                                      std::uint64_t id) const {
  const auto it = impl_->streams.find(stream);
  if (it == impl_->streams.end()) return std::nullopt;
  const StreamData& s = it->second;
  const auto at = s.index.find(id);
  if (at == s.index.end()) return std::nullopt;
  const Bucket& b = s.buckets.at(at->second.bucket);
  const Row& r = b.rows[at->second.row];
  return RetainedRow{r.trace_id, r.has_id, r.timestamp_ns,
                     std::span<const double>(b.values).subspan(r.offset, r.cols)};
}

void RetentionStore::View::for_each(const std::string& stream, std::uint64_t since,
                                    std::uint64_t until,
                                    const std::function<void(const RetainedRow&)>& fn) const {
  const auto it = impl_->streams.find(stream);
  if (it == impl_->streams.end()) return;
  const auto width = static_cast<std::uint64_t>(impl_->config.bucket.count());
  const StreamData& s = it->second;
  for (auto b = s.buckets.lower_bound(since >= width ? since - width : 0); b != s.buckets.end();
       ++b) {
    if (b->first >= until) break;
    for (const Row& r : b->second.rows) {
      if (!r.live || r.timestamp_ns < since || r.timestamp_ns >= until) continue;
      fn(RetainedRow{r.trace_id, r.has_id, r.timestamp_ns,
                     std::span<const double>(b->second.values).subspan(r.offset, r.cols)});
    }
  }
}

bool RetentionStore::View::flagged(const std::string& stream, std::uint64_t id) const {
  const auto it = impl_->flags.find(stream);
  return it != impl_->flags.end() && it->second.count(id) > 0;
}

std::vector<std::uint64_t> RetentionStore::View::flags_of(const std::string& stream) const {
  const auto it = impl_->flags.find(stream);
  if (it == impl_->flags.end()) return {};
  std::vector<std::uint64_t> out(it->second.begin(), it->second.end());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace mltap::retention
