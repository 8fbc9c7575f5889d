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

#include <spdlog/spdlog.h>
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
  std::uint16_t cols = 0;
  bool has_id = false;
  bool live = true;  // false: replaced in the reservoir
};

struct Bucket {
  std::uint64_t start = 0;
  std::vector<Row> rows;
  std::vector<double> values;
  std::uint64_t bytes = 0;  // of its file (frames written, replaced rows included)
  std::uint64_t live = 0;
  std::uint64_t seen_without_id = 0;     // rows without trace id offered (the reservoir's n)
  std::vector<std::uint32_t> reservoir;  // slot -> row
  std::string path;                      // empty: memory only
  bool writable = true;
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
  bool write_error_logged = false;
  bool replaying = false;  // reopening files: what they held was counted by the run that wrote it

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
        spdlog::warn("retention: stream '{}' not retained: retention.max_streams ({}) reached",
                     info.name, config.max_streams);
      }
      return nullptr;
    }
    StreamData& s = streams[info.name];
    s.meta = StreamMeta{info.name, info.component,     info.kind,
                        info.task, info.labels_stream, info.feature_names};
    if (!root.empty()) {
      s.dir = root + "/" + dir_name(info.name);
      if (!make_dir(s.dir)) {
        spdlog::error("retention: cannot create {}: {}; '{}' kept in memory only", s.dir,
                      std::strerror(errno), info.name);
        s.dir.clear();
      }
    }
    return &s;
  }

  Bucket& bucket_for(StreamData& s, std::uint64_t start) {
    auto [it, fresh] = s.buckets.try_emplace(start);
    Bucket& b = it->second;
    if (!fresh) return b;
    b.start = start;
    if (!s.dir.empty()) {
      b.path = s.dir + "/" + std::to_string(start) + ".rlog";
      const std::string meta = meta_payload(s.meta, start);
      if (!open_file(s, b)) return b;
      const auto bytes = std::as_bytes(std::span(meta.data(), meta.size()));
      if (s.file.append(FrameType::meta, bytes)) {
        account(s, b, frame_bytes(meta.size()));
      } else {
        write_failed(s, b);
      }
    }
    return b;
  }

  bool open_file(StreamData& s, Bucket& b) {
    if (s.file.is_open() && s.file_bucket == b.start) return true;
    if (!b.writable || b.path.empty()) return false;
    if (s.file.open(b.path)) {
      s.file_bucket = b.start;
      return true;
    }
    write_failed(s, b);
    return false;
  }

  void write_failed(StreamData& s, Bucket& b) {
    if (!write_error_logged) {
      spdlog::error(
          "retention: cannot write {}: {}; rows are kept in memory only until it "
          "can (mltap_retention_dropped_total{{cause=\"write_error\"}})",
          b.path, std::strerror(errno));
      write_error_logged = true;
    }
    b.writable = false;
    s.file.close();
  }

  void account(StreamData& s, Bucket& b, std::uint64_t n) {
    b.bytes += n;
    s.bytes += n;
    bytes += n;
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
    if (!b.path.empty()) ::unlink(b.path.c_str());
    s.buckets.erase(it);
  }

  // Frees room for `need` more bytes in `s` (never evicting bucket `keep`); false if it cannot.
  bool make_room(StreamData& s, std::uint64_t keep, std::uint64_t need) {
    while (s.bytes + need > config.max_stream_bytes) {
      auto oldest = s.buckets.begin();
      if (oldest == s.buckets.end() || oldest->first == keep) {
        return false;
      }
      spdlog::debug("retention: '{}' over max_stream_bytes: bucket {} evicted", s.meta.name,
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
    Bucket& b = bucket_for(s, start);
    Row r = proto;
    r.offset = static_cast<std::uint32_t>(b.values.size());
    r.cols = static_cast<std::uint16_t>(values.size());
    if (!b.path.empty() && open_file(s, b)) {
      const auto payload = row_payload(r, seen, slot, values);
      if (!s.file.append(FrameType::row, payload)) {
        write_failed(s, b);
        drop(RetentionDrop::write_error);  // counted, yet kept in memory
      }
    } else if (!b.path.empty()) {
      drop(RetentionDrop::write_error);
    }
    account(s, b, need);
    insert(s, b, r, values, seen, slot);
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
      Row& old = b.rows[b.reservoir[slot]];
      if (old.live && old.cols == values.size()) {
        std::copy(values.begin(), values.end(),
                  b.values.begin() + static_cast<std::ptrdiff_t>(old.offset));
        const std::uint32_t offset = old.offset;
        old = r;
        old.offset = offset;
        old.cols = static_cast<std::uint16_t>(values.size());
        old.live = true;
        return;
      }
      // A row of another width (the stream's schema changed within the bucket): appended.
      old.live = false;
      --b.live;
      --s.records;
      --records;
      b.reservoir[slot] = static_cast<std::uint32_t>(b.rows.size());
      slot = kNoSlot;
    }
    const auto index = static_cast<std::uint32_t>(b.rows.size());
    b.rows.push_back(r);
    b.rows.back().offset = static_cast<std::uint32_t>(b.values.size());
    b.rows.back().cols = static_cast<std::uint16_t>(values.size());
    b.values.insert(b.values.end(), values.begin(), values.end());
    ++b.live;
    ++s.records;
    ++records;
    if (r.has_id) {
      s.index.try_emplace(r.trace_id, Location{b.start, index});  // the first one stays
      return;
    }
    if (slot != kNoSlot) b.reservoir.resize(slot + 1, index);
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
      spdlog::info("retention: {} rows of {} streams reopened from {} ({} bytes)", records,
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
        account(*s, *b, frame_bytes(p.size()));
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
      account(*s, *b, frame_bytes(p.size()));
      insert(*s, *b, row, values, seen, slot);
      return true;
    });
    torn_bytes += r.torn_bytes;
    if (r.torn_bytes > 0) {
      spdlog::warn("retention: {}: {} bytes of a torn or corrupt tail cut", path, r.torn_bytes);
    }
    if (b && r.cut_failed) b->writable = false;
    if (!s && r.opened) {
      spdlog::warn("retention: {} holds no retained rows of a known stream: removed", path);
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
    spdlog::error("retention: cannot create {}: {}; retained samples are kept in memory only", root,
                  std::strerror(errno));
    return;
  }
  impl_->root = root;
  impl_->reopen();
  impl_->flag_file.open(root + "/flags.rlog");
  const auto r = replay(root + "/flags.rlog", [this](FrameType t, std::span<const std::byte> p) {
    if (t != FrameType::flag || p.size() < 9) return false;
    std::uint64_t id = 0;
    std::memcpy(&id, p.data(), 8);
    const std::string stream(reinterpret_cast<const char*>(p.data()) + 8, p.size() - 8);
    if (impl_->flag_count < impl_->config.max_flags && impl_->flags[stream].insert(id).second)
      ++impl_->flag_count;
    return true;
  });
  impl_->torn_bytes += r.torn_bytes;
  if (r.cut_failed) impl_->flag_file.close();
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
  for (const auto id : ids) {
    if (set.count(id)) {
      ++r.already;
      continue;
    }
    if (im.flag_count >= im.config.max_flags) {
      ++r.refused;
      continue;
    }
    if (im.flag_file.is_open()) {
      std::vector<std::byte> p(8 + stream.size());
      std::memcpy(p.data(), &id, 8);
      std::memcpy(p.data() + 8, stream.data(), stream.size());
      if (!im.flag_file.append(FrameType::flag, p)) {
        spdlog::error("retention: cannot write {}: {}", im.flag_file.path(), std::strerror(errno));
        im.drop(RetentionDrop::write_error);
      }
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
