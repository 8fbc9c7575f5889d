#include "agent/performance/stream_join.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>

#include "core/log.hpp"

namespace mltap::performance {
namespace {

constexpr auto kPending = static_cast<std::uint32_t>(SlotState::pending);
constexpr auto kJoined = static_cast<std::uint32_t>(SlotState::joined);
constexpr auto kWaiting = static_cast<std::uint32_t>(SlotState::waiting_label);

std::size_t lag_bucket(std::int64_t lag_ns) noexcept {
  const double s = static_cast<double>(std::max<std::int64_t>(0, lag_ns)) / 1e9;
  for (std::size_t i = 0; i < core::kLabelLagBucketsSeconds.size(); ++i) {
    if (s <= core::kLabelLagBucketsSeconds[i]) return i;
  }
  return core::kLabelLagBucketsSeconds.size();
}

// The row's prediction as the task scores it; NaN when the row cannot be scored.
double prediction_value(format::Task task, const double* row, std::size_t cols) noexcept {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  switch (task) {
    case format::Task::binary:
      if (cols == 1) return row[0];
      if (cols == 2) return row[1];
      return nan;
    case format::Task::multiclass: {
      if (cols == 1) return row[0];
      std::size_t best = 0;
      for (std::size_t c = 1; c < cols; ++c) {
        if (std::isnan(row[c])) return nan;
        if (row[c] > row[best]) best = c;
      }
      return std::isnan(row[0]) ? nan : static_cast<double>(best);
    }
    case format::Task::regression: return cols == 1 ? row[0] : nan;
    case format::Task::none: return nan;
  }
  return nan;
}

}  // namespace

std::string StreamJoin::file_stem(const std::string& stream) {
  // Stream names hold '/': the stem keeps the readable characters and a hash of the whole name.
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : stream) h = (h ^ c) * 1099511628211ULL;
  std::string out = "perf.";
  for (char c : stream) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') ? c : '_';
  char hex[20];
  std::snprintf(hex, sizeof hex, ".%016llx", static_cast<unsigned long long>(h));
  return out + hex;
}

StreamJoin::StreamJoin(const PendingTable::Identity& id, const PerformanceConfig& config,
                       const std::string& dir)
    : id_(id), config_(config), dir_(dir),
      ttl_(config.label_ttl.count()), grace_(config.grace.count()), window_(config.window.count()),
      retention_(config.retention.count()) {
  id_.window_ns = window_;
  // What fits the byte bound: the file is ~46 bytes per entry at the maximum load.
  const std::uint64_t by_bytes =
      static_cast<std::uint64_t>(static_cast<double>(config.max_pending_bytes) * kMaxLoad / sizeof(Slot));
  const std::uint64_t max_entries = std::max<std::uint64_t>(16, std::min(config.max_pending, by_bytes));
  table_ = PendingTable::open(dir_.empty() ? std::string() : dir_ + "/" + file_stem(id_.stream) + ".table",
                              id_, max_entries);
  if (auto it = config.streams.find(id_.stream); it != config.streams.end()) {
    prejoined_ = it->second.prejoined;
    if (!it->second.slice_column.empty()) {
      slices_ = SliceTable::open(dir_.empty() ? std::string() : dir_ + "/" + file_stem(id_.stream) + ".slices",
                                 it->second.slice_column, it->second.slice_max_values, window_);
    }
  }
  if (id_.task == format::Task::binary && config.reference_pairs > 0) {
    estimator_ = std::make_unique<Estimator>(dir_, file_stem(id_.stream), id_.stream, window_, config);
  }
  if (!dir_.empty()) replay_logs();
}

StreamJoin::~StreamJoin() { flush(); }

std::int64_t StreamJoin::window_of(std::int64_t ts) const noexcept {
  std::int64_t w = ts / window_;
  if (ts < 0 && w * window_ != ts) --w;
  return w * window_;
}

bool StreamJoin::prediction_expired(const Slot& s, std::int64_t now) const noexcept {
  return now > s.ts_ns + ttl_ + grace_;
}
bool StreamJoin::label_expired(const Slot& s, std::int64_t now) const noexcept {
  return now > s.ts_ns + grace_;
}

void StreamJoin::retire(Slot* s) {
  auto& c = table_->header().counters;
  if (s->state == kPending) ++c.expired_unlabelled;
  else if (s->state == kWaiting) ++c.unmatched;
  table_->erase(s);
}

std::string StreamJoin::log_path(std::int64_t window_start) const {
  return dir_ + "/" + file_stem(id_.stream) + "." + std::to_string(window_start) + ".pairs";
}

void StreamJoin::record_joined(const LogRecord& r, bool to_log) {
  const std::int64_t w = window_of(r.prediction_ns);
  Window& win = windows_[w];
  win.pairs.push_back(JoinedPair{r.prediction, r.label});
  if (slices_ && r.slice != kSliceNone && r.slice_generation == slices_->generation() && slices_->valid(r.slice)) {
    SliceAcc& acc = win.slices[r.slice];
    acc.pairs.push_back(JoinedPair{r.prediction, r.label});
    acc.dirty = true;
  }
  const std::size_t b = lag_bucket(r.lag_ns);
  ++win.lag_buckets[b];
  win.dirty = true;
  ++lag_buckets_[b];
  lag_sum_ += static_cast<double>(std::max<std::int64_t>(0, r.lag_ns)) / 1e9;
  if (to_log && !dir_.empty()) unwritten_[w].push_back(r);
  // The reference is fitted at the label time of the pair that completes it.
  if (estimator_) estimator_->on_joined(r.prediction, r.label, r.prediction_ns + r.lag_ns);
}

// The log record is queued before the slot says joined; flush() writes it (a write() is in the
// page cache when it returns). A kill -9 between the two leaves a pending slot with a logged
// join, which replay_logs() reconciles.
void StreamJoin::join(Slot* s, std::uint64_t trace_id, std::int64_t pred_ts, double pred,
                      std::int64_t label_ts, double label, std::uint32_t slice) {
  record_joined(LogRecord{trace_id, pred_ts, label_ts - pred_ts, pred, label, slice,
                          slices_ ? slices_->generation() : 0},
                true);
  ++table_->header().counters.joined;
  s->ts_ns = pred_ts;
  s->value = pred;
  s->slice = slice;
  table_->set_state(s, SlotState::joined);
}

void StreamJoin::prediction(std::uint64_t id, std::int64_t ts, double value, std::int64_t now,
                            std::uint32_t slice) {
  auto& c = table_->header().counters;
  Slot* s = table_->find(id);
  if (s && ((s->state == kWaiting && label_expired(*s, now)) ||
            (s->state != kWaiting && prediction_expired(*s, now)))) {
    retire(s);
    s = nullptr;
  }
  if (s && s->state != kWaiting) {
    ++c.predictions_duplicate;
    return;
  }
  ++c.predictions;
  ++table_->window_counter(window_of(ts)).predictions;
  if (slices_) slices_->count_prediction(window_of(ts), slice);
  if (estimator_) estimator_->on_prediction(window_of(ts), value);
  if (s) {  // a label was waiting for this prediction
    const std::int64_t label_ts = s->ts_ns;
    const double label = s->value;
    if (label_ts - ts <= ttl_) {
      join(s, id, ts, value, label_ts, label, slice);
    } else {
      ++c.late;
      s->ts_ns = ts;
      s->value = value;
      s->slice = slice;
      table_->set_state(s, SlotState::pending);
    }
    return;
  }
  if (table_->full() && !make_room(now)) return;
  table_->insert(id, ts, value, SlotState::pending, slice);
}

void StreamJoin::label(std::uint64_t id, std::int64_t ts, double value, std::int64_t now) {
  auto& c = table_->header().counters;
  ++c.labels;
  Slot* s = table_->find(id);
  if (s && ((s->state == kWaiting && label_expired(*s, now)) ||
            (s->state != kWaiting && prediction_expired(*s, now)))) {
    retire(s);
    s = nullptr;
  }
  if (s) {
    if (s->state == kPending) {
      if (ts - s->ts_ns <= ttl_) join(s, id, s->ts_ns, s->value, ts, value, s->slice);
      else ++c.late;
    } else {
      ++c.duplicate;
    }
    return;
  }
  if (table_->full() && !make_room(now)) return;
  table_->insert(id, ts, value, SlotState::waiting_label);
}

// The table is full: first everything past its time leaves; if that frees less than a tenth,
// entries are evicted in this order, oldest first within each: joined markers (only duplicate
// detection is lost), waiting labels, then pending predictions. Every eviction is counted by
// cause (and a prediction's in its window). False only if nothing could be freed.
bool StreamJoin::make_room(std::int64_t now) {
  table_->sweep(table_->capacity(), [&](Slot& s) {
    const bool due = s.state == kWaiting ? label_expired(s, now) : prediction_expired(s, now);
    if (due) {
      auto& c = table_->header().counters;
      if (s.state == kPending) ++c.expired_unlabelled;
      else if (s.state == kWaiting) ++c.unmatched;
    }
    return due;
  });
  const std::uint64_t max = table_->header().max_entries;
  const std::uint64_t target = max - max / 10;
  if (table_->header().count <= target) return !table_->full();
  struct Victim {
    std::uint32_t rank;
    std::int64_t ts;
    std::uint64_t id;
  };
  std::vector<Victim> all;
  all.reserve(table_->header().count);
  const Slot* slots = table_->slots();
  for (std::uint64_t i = 0; i < table_->capacity(); ++i) {
    const Slot& s = slots[i];
    if (s.state == 0) continue;
    const std::uint32_t rank = s.state == kJoined ? 0 : s.state == kWaiting ? 1 : 2;
    all.push_back(Victim{rank, s.ts_ns, s.trace_id});
  }
  const std::size_t k = static_cast<std::size_t>(table_->header().count - target);
  auto older = [](const Victim& a, const Victim& b) {
    return a.rank != b.rank ? a.rank < b.rank : a.ts < b.ts;
  };
  std::nth_element(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k - 1), all.end(), older);
  auto& c = table_->header().counters;
  for (std::size_t i = 0; i < k; ++i) {
    Slot* s = table_->find(all[i].id);
    if (!s) continue;
    if (s->state == kPending) {
      ++c.evicted[static_cast<std::size_t>(core::EvictionCause::prediction)];
      ++table_->window_counter(window_of(s->ts_ns)).evicted;
    } else if (s->state == kWaiting) {
      ++c.evicted[static_cast<std::size_t>(core::EvictionCause::waiting_label)];
    } else {
      ++c.evicted[static_cast<std::size_t>(core::EvictionCause::joined_marker)];
    }
    table_->erase(s);
  }
  if (k > 0) {
    core::log::warn("performance: pending table of '{}' full ({} entries): evicted {} (joined markers, "
                 "then waiting labels, then the oldest predictions); see "
                 "mltap_performance_evicted_total",
                 id_.stream, max, k);
  }
  return !table_->full();
}

void StreamJoin::add_predictions(const core::DecodedBatch& b, std::int64_t now) {
  auto& c = table_->header().counters;
  if (b.trace_ids.empty()) {
    c.predictions_no_trace_id += b.rows;
    return;
  }
  const auto ts = static_cast<std::int64_t>(b.timestamp_ns);
  // The slice column (by feature name) is not part of the prediction: the row is scored without it.
  std::size_t slice_col = b.cols;
  if (slices_) {
    if (b.stream) {
      const auto& names = b.stream->feature_names;
      for (std::size_t i = 0; i < names.size() && i < b.cols; ++i) {
        if (names[i] == slices_->column()) slice_col = i;
      }
    }
    if (slice_col == b.cols) slices_->count_missing(b.rows);
  }
  thread_local std::vector<double> row;
  for (std::size_t r = 0; r < b.rows; ++r) {
    const double* values = b.values.data() + r * b.cols;
    std::size_t cols = b.cols;
    std::uint32_t slice = kSliceNone;
    if (slice_col < b.cols) {
      row.assign(values, values + b.cols);
      row.erase(row.begin() + static_cast<std::ptrdiff_t>(slice_col));
      values = row.data();
      cols = b.cols - 1;
    }
    const double v = prediction_value(id_.task, values, cols);
    if (!std::isfinite(v)) {
      ++c.predictions_bad;
      continue;
    }
    if (slice_col < b.cols) slice = slices_->code_for(b.values[r * b.cols + slice_col]);
    prediction(b.trace_ids[r], ts, v, now, slice);
  }
  flush();
}

void StreamJoin::add_labels(const core::DecodedBatch& b, std::int64_t now) {
  auto& c = table_->header().counters;
  if (b.trace_ids.empty()) {
    c.labels_no_trace_id += b.rows;
    return;
  }
  const auto ts = static_cast<std::int64_t>(b.timestamp_ns);
  for (std::size_t r = 0; r < b.rows; ++r) {
    const double y = b.cols == 0 ? std::numeric_limits<double>::quiet_NaN() : b.values[r * b.cols];
    if (!std::isfinite(y)) {
      ++c.labels_bad;
      continue;
    }
    label(b.trace_ids[r], ts, y, now);
  }
  flush();
}

// Pre-joined rows are trusted no more than any ring: every value is checked, and a row the window
// attribution cannot use (NaN, a prediction time in the future or past retention) is counted by
// reason and dropped.
bool StreamJoin::prejoined(double prediction, double label, double prediction_time_s,
                           std::int64_t label_ts, std::int64_t now, std::optional<double> slice_value) {
  core::PrejoinedCounters& p = table_->header().prejoined;
  ++p.rows;
  const bool score_ok = std::isfinite(prediction) &&
                        (id_.task != format::Task::binary || (prediction >= 0 && prediction <= 1)) &&
                        (id_.task != format::Task::multiclass ||
                         (prediction >= 0 && prediction < 2147483648.0 && prediction == std::floor(prediction)));
  if (!score_ok) {
    ++p.bad_prediction;
    return false;
  }
  if (!std::isfinite(label)) {
    ++p.bad_label;
    return false;
  }
  // Up to year 2262 (int64 ns); negative times are not prediction times.
  if (!std::isfinite(prediction_time_s) || prediction_time_s < 0 || prediction_time_s >= 9.2e9) {
    ++p.bad_time;
    return false;
  }
  const auto ts = static_cast<std::int64_t>(std::llround(prediction_time_s * 1e9));
  if (ts > now + grace_) {
    ++p.future;
    return false;
  }
  const std::int64_t w = window_of(ts);
  if (w + window_ + ttl_ + grace_ + retention_ < now) {
    ++p.too_old;
    return false;
  }
  ++p.accepted;
  const std::uint32_t slice = slices_ && slice_value ? slices_->code_for(*slice_value) : kSliceNone;
  auto& c = table_->header().counters;
  ++c.predictions;
  ++c.labels;
  ++c.joined;
  ++table_->window_counter(w).predictions;
  if (slices_) slices_->count_prediction(w, slice);
  record_joined(LogRecord{0, ts, label_ts - ts, prediction, label, slice, slices_ ? slices_->generation() : 0}, true);
  return true;
}

void StreamJoin::add_prejoined(const core::DecodedBatch& b, std::int64_t now) {
  // Columns: prediction, label, prediction time (unix seconds)[, slice value].
  const bool with_slice = slices_ && b.cols == 4;
  if (b.cols != 3 && !with_slice) {
    table_->header().prejoined.rows += b.rows;
    table_->header().prejoined.bad_shape += b.rows;
    return;
  }
  if (slices_ && !with_slice) slices_->count_missing(b.rows);
  const auto label_ts = static_cast<std::int64_t>(b.timestamp_ns);
  for (std::size_t r = 0; r < b.rows; ++r) {
    const double* row = b.values.data() + r * b.cols;
    prejoined(row[0], row[1], row[2], label_ts, now, with_slice ? std::optional<double>(row[3]) : std::nullopt);
  }
  flush();
}

void StreamJoin::flush() {
  for (auto& [w, records] : unwritten_) {
    if (records.empty()) continue;
    const std::string path = log_path(w);
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
      core::log::warn("performance: cannot append to {}: {} (joins kept in memory only)", path,
                   std::strerror(errno));
      records.clear();
      continue;
    }
    const char* p = reinterpret_cast<const char*>(records.data());
    std::size_t left = records.size() * sizeof(LogRecord);
    while (left > 0) {
      const ssize_t n = ::write(fd, p, left);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        core::log::warn("performance: cannot append to {}: {}", path, std::strerror(errno));
        break;
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
    ::close(fd);
    records.clear();
  }
  unwritten_.clear();
}

// After a restart: every joined log of this stream back into its window; a join logged but whose
// slot still says pending (killed between the two) becomes joined.
void StreamJoin::replay_logs() {
  const std::string prefix = file_stem(id_.stream) + ".";
  DIR* d = ::opendir(dir_.c_str());
  if (!d) return;
  std::vector<std::pair<std::string, std::size_t>> files;
  auto ends = [](const std::string& n, std::string_view suffix) {
    return n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.rfind(prefix, 0) != 0) continue;
    if (ends(name, ".pairs")) files.emplace_back(name, sizeof(LogRecord));
    else if (ends(name, ".joined")) files.emplace_back(name, kLegacyRecordBytes);  // before slices
  }
  ::closedir(d);
  for (const auto& [name, bytes] : files) replay_log(dir_ + "/" + name, bytes);
}

void StreamJoin::replay_log(const std::string& path, std::size_t record_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return;
  std::vector<char> buf(4096 * record_bytes);
  for (;;) {
    // Reads whole multiples of the record size except at the end of the file, where a torn last
    // record (a crash mid-write) is ignored.
    std::size_t got = 0;
    while (got < buf.size()) {
      const ssize_t n = ::read(fd, buf.data() + got, buf.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    for (std::size_t i = 0; i + record_bytes <= got; i += record_bytes) {
      LogRecord r{};
      std::memcpy(&r, buf.data() + i, record_bytes);
      if (!std::isfinite(r.prediction) || !std::isfinite(r.label)) continue;
      record_joined(r, false);
      if (Slot* s = table_->find(r.trace_id); s && s->state == kPending && s->ts_ns == r.prediction_ns) {
        ++table_->header().counters.joined;
        table_->set_state(s, SlotState::joined);
      }
    }
    if (got < buf.size()) break;
  }
  ::close(fd);
}

void StreamJoin::tick(std::int64_t now, bool full) {
  flush();
  last_now_ = std::max(last_now_, now);
  // The whole table once every 64 s of agent time, in slices proportional to the time since the
  // last one (ticks may come every millisecond); an entry past its time is also retired whenever
  // it is looked up, so the results do not depend on when the sweep comes by.
  constexpr std::int64_t kSweepPeriodNs = 64'000'000'000;
  std::uint64_t budget = table_->capacity();
  if (!full) {
    const std::int64_t elapsed = last_sweep_ == 0 ? 0 : std::max<std::int64_t>(0, now - last_sweep_);
    budget = static_cast<std::uint64_t>(static_cast<double>(table_->capacity()) *
                                        std::min(1.0, static_cast<double>(elapsed) / kSweepPeriodNs));
    if (budget == 0 && last_sweep_ != 0) return prune_windows(now);
  }
  last_sweep_ = now;
  table_->sweep(budget, [&](Slot& s) {
    const bool due = s.state == kWaiting ? label_expired(s, now) : prediction_expired(s, now);
    if (due) {
      auto& c = table_->header().counters;
      if (s.state == kPending) ++c.expired_unlabelled;
      else if (s.state == kWaiting) ++c.unmatched;
    }
    return due;
  });
  prune_windows(now);
}

void StreamJoin::prune_windows(std::int64_t now) {
  const std::int64_t horizon = window_ + ttl_ + grace_ + retention_;
  while (!windows_.empty() && windows_.begin()->first + horizon < now) {
    if (!dir_.empty()) {
      const std::string path = log_path(windows_.begin()->first);
      ::unlink(path.c_str());
      ::unlink((path.substr(0, path.size() - 6) + ".joined").c_str());  // an earlier version's
    }
    windows_.erase(windows_.begin());
  }
}

core::PerformanceStreamState StreamJoin::state() {
  core::PerformanceStreamState st;
  const TableHeader& h = table_->header();
  st.stream = id_.stream;
  st.labels_stream = id_.labels_stream;
  st.task = id_.task;
  st.window_ns = window_;
  st.label_ttl_ns = ttl_;
  st.counters = h.counters;
  st.pending = h.by_state[kPending];
  st.waiting_labels = h.by_state[kWaiting];
  st.joined_markers = h.by_state[kJoined];
  st.capacity = h.max_entries;
  st.table_bytes = table_->bytes();
  st.durable = table_->durable();
  st.lag_buckets = lag_buckets_;
  st.lag_seconds_sum = lag_sum_;
  const MetricOptions opts{config_.threshold, config_.calibration_bins};
  // Windows with predictions counted in the table, and windows with joins (a join's window may
  // have been counted by an earlier table, e.g. before a resize).
  std::map<std::int64_t, core::PerformanceWindow> out;
  for (auto& [start, w] : windows_) {
    if (w.dirty) {
      w.metrics = compute_metrics(id_.task, w.pairs, opts);
      w.dirty = false;
    }
    auto& pw = out[start];
    pw.start_unix_ns = start;
    pw.labelled = w.pairs.size();
    pw.lag_buckets = w.lag_buckets;
    pw.metrics = w.metrics;
    for (auto& [code, acc] : w.slices) {
      if (acc.dirty) {
        acc.metrics = compute_metrics(id_.task, acc.pairs, opts);
        acc.dirty = false;
      }
    }
  }
  const WindowCounter* counters = table_->window_counters();
  for (std::uint32_t i = 0; i < kWindowCounterSlots; ++i) {
    const WindowCounter& wc = counters[i];
    if (wc.start_ns == std::numeric_limits<std::int64_t>::min()) continue;
    if (last_now_ > 0 && wc.start_ns + window_ + ttl_ + grace_ + retention_ < last_now_) continue;
    auto& pw = out[wc.start_ns];
    pw.start_unix_ns = wc.start_ns;
    pw.predictions = wc.predictions;
    pw.evicted = wc.evicted;
  }
  if (slices_) {
    st.slice_column = slices_->column();
    st.slice_max_values = slices_->max_values();
    st.slice_other_rows = slices_->other_rows();
    st.slice_invalid_rows = slices_->invalid_rows();
    st.slice_missing_rows = slices_->missing_rows();
    for (auto& [start, pw] : out) {
      // Every slice with predictions or joins in the window, values in index order, "other" last.
      const auto wit = windows_.find(start);
      for (std::uint32_t code = 1; code < kSliceCodes; ++code) {
        if (code > slices_->values() && code != kSliceOther) continue;
        const SliceAcc* acc = nullptr;
        if (wit != windows_.end()) {
          if (auto a = wit->second.slices.find(code); a != wit->second.slices.end()) acc = &a->second;
        }
        const std::uint64_t predictions = slices_->predictions(start, code);
        if (predictions == 0 && !acc) continue;
        core::PerformanceSlice ps;
        ps.value = slices_->name(code);
        ps.predictions = predictions;
        if (acc) {
          ps.labelled = acc->pairs.size();
          ps.metrics = acc->metrics;
        }
        pw.slices.push_back(std::move(ps));
      }
    }
  }
  st.prejoined = prejoined_;
  st.prejoined_counters = h.prejoined;
  if (estimator_) {
    st.reference = estimator_->reference_state();
    for (auto& [start, pw] : out) pw.estimate = estimator_->window_estimate(start);
  }
  for (auto& [start, pw] : out) st.windows.push_back(std::move(pw));
  return st;
}

}  // namespace mltap::performance
