// The label join's rules one by one, its bounds and eviction order, its durability across a
// reopen of the state directory, the metrics on small hand-checked cases, and the config's
// strict errors. The join against an independent oracle is join_oracle.py.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include <prometheus/text_serializer.h>
#include <random>

#include "agent/performance/config.hpp"
#include "agent/performance/engine.hpp"
#include "agent/performance/realized.hpp"
#include "agent/performance/stream_join.hpp"
#include "core/config_reader.hpp"
#include "core/time.hpp"
#include "exporters/metrics/performance_metrics.hpp"

using namespace mltap;
using namespace mltap::performance;

namespace {

constexpr std::int64_t kS = 1'000'000'000;
constexpr std::int64_t kT0 = 1'700'000'000 * kS;

PerformanceConfig config(std::uint64_t max_pending = 1024) {
  PerformanceConfig c;
  c.label_ttl = std::chrono::seconds(100);
  c.grace = std::chrono::seconds(10);
  c.window = std::chrono::seconds(60);
  c.max_pending = max_pending;
  return c;
}

PendingTable::Identity binary_id() { return {"t/pred", "t/labels", format::Task::binary, 0}; }

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("mltap-perf-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

}  // namespace

TEST(StreamJoin, JoinsByTraceIdIntoThePredictionsWindow) {
  StreamJoin j(binary_id(), config(), "");
  const std::int64_t w0 = kT0 / (60 * kS) * (60 * kS);
  j.prediction(1, w0 + 59 * kS, 0.9, w0 + 59 * kS);  // window w0
  j.prediction(2, w0 + 61 * kS, 0.2, w0 + 61 * kS);  // window w0 + 60 s
  j.label(1, w0 + 90 * kS, 1, w0 + 90 * kS);          // label in the next window: counts in w0
  j.label(2, w0 + 95 * kS, 1, w0 + 95 * kS);
  const auto st = j.state();
  ASSERT_EQ(st.windows.size(), 2u);
  EXPECT_EQ(st.windows[0].start_unix_ns, w0);
  EXPECT_EQ(st.windows[0].predictions, 1u);
  EXPECT_EQ(st.windows[0].labelled, 1u);
  EXPECT_EQ(st.windows[1].labelled, 1u);
  EXPECT_DOUBLE_EQ(*st.windows[0].metrics.accuracy, 1.0);
  EXPECT_DOUBLE_EQ(*st.windows[1].metrics.accuracy, 0.0);  // 0.2 < 0.5 but labelled 1
  EXPECT_EQ(st.counters.joined, 2u);
  EXPECT_EQ(st.windows[0].lag_buckets[2], 1u);  // 31 s: (10, 60]
}

TEST(StreamJoin, LabelBeforePredictionWaitsForGrace) {
  StreamJoin j(binary_id(), config(), "");
  j.label(7, kT0 + 5 * kS, 1, kT0 + 5 * kS);
  EXPECT_EQ(j.state().waiting_labels, 1u);
  j.prediction(7, kT0, 0.7, kT0 + 6 * kS);  // read after its label, within grace
  auto st = j.state();
  EXPECT_EQ(st.counters.joined, 1u);
  EXPECT_EQ(st.waiting_labels, 0u);
  // A label whose prediction never comes is unmatched once grace has passed.
  j.label(8, kT0 + 10 * kS, 1, kT0 + 10 * kS);
  j.tick(kT0 + 19 * kS, true);
  EXPECT_EQ(j.state().counters.unmatched, 0u);
  j.tick(kT0 + 21 * kS, true);
  EXPECT_EQ(j.state().counters.unmatched, 1u);
  // And a prediction arriving after that finds nothing waiting: it is simply pending.
  j.prediction(8, kT0 + 9 * kS, 0.1, kT0 + 22 * kS);
  EXPECT_EQ(j.state().pending, 1u);
}

TEST(StreamJoin, LateDuplicateAndExpired) {
  StreamJoin j(binary_id(), config(), "");
  j.prediction(1, kT0, 0.9, kT0);
  j.prediction(1, kT0 + kS, 0.1, kT0 + kS);  // duplicate prediction: the first wins
  j.label(1, kT0 + 100 * kS, 1, kT0 + 100 * kS);  // lag == TTL: joins
  j.label(1, kT0 + 101 * kS, 0, kT0 + 101 * kS);  // duplicate label
  j.prediction(2, kT0, 0.9, kT0);
  j.label(2, kT0 + 105 * kS, 1, kT0 + 105 * kS);  // after TTL, prediction still held: late
  j.label(2, kT0 + 111 * kS, 1, kT0 + 111 * kS);  // after TTL + grace: prediction gone
  auto st = j.state();
  EXPECT_EQ(st.counters.predictions, 2u);
  EXPECT_EQ(st.counters.predictions_duplicate, 1u);
  EXPECT_EQ(st.counters.joined, 1u);
  EXPECT_EQ(st.counters.duplicate, 1u);
  EXPECT_EQ(st.counters.late, 1u);
  EXPECT_EQ(st.counters.expired_unlabelled, 1u);  // prediction 2, retired at the lookup
  EXPECT_EQ(st.waiting_labels, 1u);               // the last label now waits, then is unmatched
  EXPECT_DOUBLE_EQ(*st.windows[0].metrics.accuracy, 1.0);  // the first prediction (0.9) joined
}

// A full sweep visits every slot however many it erases: 500 predictions in a row (one cluster of
// the linear probing) all past their TTL leave at one full tick, none stays behind.
TEST(StreamJoin, AFullSweepRetiresEveryExpiredEntry) {
  StreamJoin j(binary_id(), config(1024), "");
  for (std::uint64_t id = 1; id <= 500; ++id) j.prediction(id, kT0, 0.5, kT0);
  j.label(1, kT0 + kS, 1, kT0 + kS);  // one joined marker too
  ASSERT_EQ(j.state().pending, 499u);
  j.tick(kT0 + 111 * kS, true);  // past TTL (100 s) + grace (10 s)
  const auto st = j.state();
  EXPECT_EQ(st.pending, 0u);
  EXPECT_EQ(st.joined_markers, 0u);
  EXPECT_EQ(st.counters.expired_unlabelled, 499u);
}

TEST(StreamJoin, FullTableEvictsInTheDocumentedOrderAndCountsIt) {
  auto c = config(100);
  StreamJoin j(binary_id(), c, "");
  // 10 joined markers, 10 waiting labels, then predictions up to the bound.
  for (std::uint64_t i = 0; i < 10; ++i) {
    j.prediction(i, kT0 + static_cast<std::int64_t>(i), 0.5, kT0);
    j.label(i, kT0 + kS, 1, kT0);
  }
  for (std::uint64_t i = 100; i < 110; ++i) j.label(i, kT0, 1, kT0);
  for (std::uint64_t i = 1000; i < 1080; ++i) j.prediction(i, kT0 + static_cast<std::int64_t>(i), 0.5, kT0);
  auto st = j.state();
  EXPECT_EQ(st.pending + st.waiting_labels + st.joined_markers, 100u);
  j.prediction(5000, kT0 + 5000, 0.5, kT0);  // the 101st entry: evict down to 90 first
  st = j.state();
  EXPECT_EQ(st.counters.evicted[0], 10u);  // joined markers first (only duplicate detection lost)
  EXPECT_EQ(st.counters.evicted[1], 0u);
  EXPECT_EQ(st.pending + st.waiting_labels + st.joined_markers, 91u);
  for (std::uint64_t i = 6000; i < 6010; ++i) j.prediction(i, kT0 + static_cast<std::int64_t>(i), 0.5, kT0);
  st = j.state();
  EXPECT_EQ(st.counters.evicted[1], 10u);  // then the waiting labels
  EXPECT_EQ(st.counters.evicted[2], 0u);
  for (std::uint64_t i = 7000; i < 7010; ++i) j.prediction(i, kT0 + static_cast<std::int64_t>(i), 0.5, kT0);
  st = j.state();
  EXPECT_EQ(st.counters.evicted[2], 10u);  // then the oldest predictions: ids 1000..1009
  EXPECT_EQ(st.pending, 91u);
  j.label(1000, kT0 + kS, 1, kT0 + kS);  // so its label finds nothing and waits
  j.label(1010, kT0 + kS, 1, kT0 + kS);  // while 1010 was kept and joins
  st = j.state();
  EXPECT_EQ(st.waiting_labels, 1u);
  EXPECT_EQ(st.counters.joined, 11u);
  std::uint64_t evicted_in_windows = 0;
  for (const auto& w : st.windows) evicted_in_windows += w.evicted;
  EXPECT_EQ(evicted_in_windows, 10u);
  EXPECT_LE(static_cast<double>(st.table_bytes - 4096 - 32768) / 100.0, 48.0);
}

TEST(StreamJoin, TableAndJoinsSurviveAReopen) {
  TempDir dir;
  {
    StreamJoin j(binary_id(), config(), dir.path.string());
    for (std::uint64_t i = 0; i < 500; ++i) j.prediction(i, kT0, i % 2 ? 0.8 : 0.3, kT0);
    for (std::uint64_t i = 0; i < 100; ++i) j.label(i, kT0 + kS, static_cast<double>(i % 2), kT0 + kS);
    j.flush();
    // No destructor-time work matters: the table is a shared mapping, the log is written.
  }
  StreamJoin again(binary_id(), config(), dir.path.string());
  auto st = again.state();
  EXPECT_EQ(st.pending, 400u);
  EXPECT_EQ(st.joined_markers, 100u);
  ASSERT_EQ(st.windows.size(), 1u);
  EXPECT_EQ(st.windows[0].predictions, 500u);
  EXPECT_EQ(st.windows[0].labelled, 100u);
  for (std::uint64_t i = 100; i < 500; ++i) again.label(i, kT0 + 2 * kS, static_cast<double>(i % 2), kT0 + 2 * kS);
  again.label(3, kT0 + 2 * kS, 1, kT0 + 2 * kS);  // joined before the reopen: duplicate
  st = again.state();
  EXPECT_EQ(st.windows[0].labelled, 500u);
  EXPECT_EQ(st.counters.duplicate, 1u);
  EXPECT_DOUBLE_EQ(*st.windows[0].metrics.accuracy, 1.0);
  // A different bound rebuilds the table and keeps its entries.
  auto bigger = config(4096);
  StreamJoin resized(binary_id(), bigger, dir.path.string());
  EXPECT_EQ(resized.state().joined_markers, 500u);
  EXPECT_EQ(resized.state().capacity, 4096u);
}

TEST(StreamJoin, BatchesFromTheIngestLayer) {
  StreamJoin j(binary_id(), config(), "");
  core::StreamInfo pred_info{"t/pred", "m", format::StreamKind::predictions, format::DType::float32, {2}, {}, format::Task::binary, "t/labels"};
  const double values[] = {0.1, 0.9, 0.8, 0.2, NAN, NAN};
  const std::uint64_t ids[] = {1, 2, 3};
  const std::uint32_t shape[] = {2};
  core::DecodedBatch b;
  b.stream = &pred_info;
  b.timestamp_ns = static_cast<std::uint64_t>(kT0);
  b.rows = 3;
  b.cols = 2;
  b.row_shape = shape;
  b.values = values;
  b.trace_ids = ids;
  j.add_predictions(b, kT0);
  auto st = j.state();
  EXPECT_EQ(st.counters.predictions, 2u);  // two columns: the second is P(positive)
  EXPECT_EQ(st.counters.predictions_bad, 1u);
  b.trace_ids = {};
  j.add_predictions(b, kT0);
  EXPECT_EQ(j.state().counters.predictions_no_trace_id, 3u);
}

TEST(Realized, AucWithTiesIsTheMannWhitneyStatistic) {
  // Scores with ties across classes; AUC = P(s+ > s-) + 0.5 P(s+ == s-) by hand: pairs
  // (pos: .8 .5 .5) x (neg: .5 .2) -> .8>.5 1, .8>.2 1, .5=.5 .5, .5>.2 1, .5=.5 .5, .5>.2 1 = 5/6.
  std::vector<JoinedPair> p = {{0.8, 1}, {0.5, 1}, {0.5, 1}, {0.5, 0}, {0.2, 0}};
  EXPECT_NEAR(*roc_auc(p), 5.0 / 6.0, 1e-15);
  std::vector<JoinedPair> one = {{0.8, 1}, {0.5, 1}};
  EXPECT_FALSE(roc_auc(one).has_value());
}

TEST(Realized, BinaryMulticlassRegression) {
  std::vector<JoinedPair> b = {{0.9, 1}, {0.6, 0}, {0.4, 1}, {0.1, 0}};
  const auto m = compute_metrics(format::Task::binary, b, {});
  EXPECT_DOUBLE_EQ(*m.accuracy, 0.5);
  EXPECT_DOUBLE_EQ(*m.precision, 0.5);
  EXPECT_DOUBLE_EQ(*m.recall, 0.5);
  EXPECT_DOUBLE_EQ(*m.f1, 0.5);
  EXPECT_NEAR(*m.log_loss, -(2 * std::log(0.9) + 2 * std::log(0.4)) / 4, 1e-12);
  // Bins of 0.1: each value alone in its bin: |y - p| averaged.
  EXPECT_NEAR(*m.calibration_error, (0.1 + 0.6 + 0.6 + 0.1) / 4, 1e-12);
  std::vector<JoinedPair> mc = {{2, 2}, {1, 0}, {0, 0}};
  EXPECT_NEAR(*compute_metrics(format::Task::multiclass, mc, {}).accuracy, 2.0 / 3, 1e-15);
  std::vector<JoinedPair> r = {{1, 2}, {4, 2}};
  const auto rm = compute_metrics(format::Task::regression, r, {});
  EXPECT_DOUBLE_EQ(*rm.mae, 1.5);
  EXPECT_DOUBLE_EQ(*rm.rmse, std::sqrt(2.5));
  EXPECT_FALSE(rm.accuracy.has_value());
}

TEST(Config, StrictErrorsWithLocation) {
  auto parse = [](const std::string& text) {
    core::ConfigSection top(core::load_text(text, "t.yaml"), "t.yaml", "");
    auto c = parse_performance_config(top.child("performance"));
    top.finish();
    return c;
  };
  const auto c = parse("performance:\n  label_ttl: 2d\n  streams:\n    fraud/pred: {labels_stream: fraud/labels, task: binary}\n");
  EXPECT_EQ(c.label_ttl, std::chrono::hours(48));
  EXPECT_EQ(c.streams.at("fraud/pred").task, format::Task::binary);
  try {
    parse("performance:\n  streams:\n    fraud/pred:\n      labels_stream: fraud/labels\n      task: ranking\n");
    FAIL();
  } catch (const core::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("t.yaml:5:"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse("performance:\n  grace_period: 5m\n"), core::ConfigError);
  EXPECT_THROW(parse("performance:\n  streams:\n    a/b: {task: binary}\n"), core::ConfigError);
}

TEST(Engine, ReopensTablesAtStartSoThatLabelsJoinAfterARestart) {
  TempDir dir;
  // The engine's clock is the wall clock: timestamps of now, or everything would be expired.
  const auto t0 = static_cast<std::int64_t>(core::unix_now_ns());
  auto c = config();
  core::StreamInfo pred{"e/pred", "m", format::StreamKind::predictions, format::DType::float32, {1}, {}, format::Task::binary, "e/labels"};
  core::StreamInfo lab{"e/labels", "f", format::StreamKind::labels, format::DType::float32, {1}, {}, format::Task::none, ""};
  const double v[] = {0.9};
  const std::uint64_t id[] = {42};
  const std::uint32_t shape[] = {1};
  core::DecodedBatch b;
  b.rows = 1;
  b.cols = 1;
  b.row_shape = shape;
  b.values = v;
  b.trace_ids = id;
  b.timestamp_ns = static_cast<std::uint64_t>(t0);
  {
    PerformanceEngine e(c, dir.path.string());
    b.stream = &pred;
    e.on_batch(b);
    e.publish_now();
    EXPECT_EQ(e.snapshot()->streams.at(0).pending, 1u);
  }
  PerformanceEngine e(c, dir.path.string());  // no predictions batch since the restart
  b.stream = &lab;
  const double y[] = {1};
  b.values = y;
  b.timestamp_ns = static_cast<std::uint64_t>(t0 + kS);
  e.on_batch(b);
  e.publish_now();
  const auto snap = e.snapshot();
  ASSERT_EQ(snap->streams.size(), 1u);
  EXPECT_EQ(snap->streams[0].counters.joined, 1u);
  EXPECT_EQ(snap->labels_without_predictions_stream, 0u);
}

// The Prometheus collector over a fixture snapshot: the latest window with labels is exported,
// undefined metrics are absent (never 0), the lag histogram is cumulative, and every family is
// documented in docs/metrics.md.
TEST(Collector, LatestLabelledWindowAndDocumentedNames) {
  auto snap = std::make_shared<core::PerformanceSnapshot>();
  core::PerformanceStreamState s;
  s.stream = "c/pred";
  s.task = format::Task::binary;
  s.counters.joined = 7;
  s.counters.evicted[2] = 3;
  s.lag_buckets[0] = 2;
  s.lag_buckets[3] = 5;
  core::PerformanceWindow w1, w2, w3;
  w1.start_unix_ns = 600 * kS;
  w1.predictions = 10;
  w1.labelled = 7;
  w1.metrics.accuracy = 0.75;
  w1.metrics.roc_auc = std::nullopt;  // one class
  w2.start_unix_ns = 1200 * kS;
  w2.predictions = 4;
  w2.labelled = 4;
  w2.metrics.accuracy = 0.5;
  w3.start_unix_ns = 1800 * kS;  // no label yet: not the exported window
  w3.predictions = 9;
  s.windows = {w1, w2, w3};
  snap->streams.push_back(s);
  metrics::PerformanceCollector c([snap] { return snap; });
  const auto families = c.Collect();
  const std::string text = prometheus::TextSerializer().Serialize(families);
  EXPECT_NE(text.find("mltap_performance_window_start_seconds{stream=\"c/pred\"} 1200"), std::string::npos) << text;
  EXPECT_NE(text.find("mltap_performance_label_coverage_ratio{stream=\"c/pred\"} 1"), std::string::npos);
  EXPECT_NE(text.find("mltap_performance_realized{stream=\"c/pred\",metric=\"accuracy\"} 0.5"), std::string::npos);
  EXPECT_EQ(text.find("metric=\"roc_auc\""), std::string::npos);
  EXPECT_NE(text.find("mltap_performance_evicted_total{stream=\"c/pred\",cause=\"prediction\"} 3"), std::string::npos);
  EXPECT_NE(text.find("mltap_performance_label_lag_seconds_bucket{stream=\"c/pred\",le=\"600\"} 7"), std::string::npos) << text;
  EXPECT_NE(text.find("mltap_performance_labels_total{stream=\"c/pred\",outcome=\"joined\"} 7"), std::string::npos);
  std::ifstream doc(MLTAP_METRICS_DOC);
  const std::string documented((std::istreambuf_iterator<char>(doc)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(documented.empty());
  for (const auto& f : families) {
    EXPECT_NE(documented.find("`" + f.name + "`"), std::string::npos) << f.name << " not in docs/metrics.md";
  }
}

TEST(StreamJoin, AnUnusableTableFileIsMovedAsideNotLost) {
  TempDir dir;
  const auto path = dir.path / (StreamJoin::file_stem("t/pred") + ".table");
  {
    std::ofstream f(path);
    f << "not a table";
  }
  StreamJoin j(binary_id(), config(), dir.path.string());
  j.prediction(1, kT0, 0.5, kT0);
  EXPECT_EQ(j.state().pending, 1u);
  int aside = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path)) {
    if (e.path().filename().string().find(".table.unusable-") != std::string::npos) ++aside;
  }
  EXPECT_EQ(aside, 1);
}

TEST(Engine, AnUnusableStateDirectoryKeepsTheJoinInMemory) {
  TempDir dir;
  const auto blocker = dir.path / "file";
  std::ofstream(blocker) << "x";
  PerformanceEngine e(config(), (blocker / "state").string());  // under a regular file
  core::StreamInfo pred{"u/pred", "m", format::StreamKind::predictions, format::DType::float32, {1}, {}, format::Task::binary, "u/labels"};
  const double v[] = {0.9};
  const std::uint64_t id[] = {1};
  const std::uint32_t shape[] = {1};
  core::DecodedBatch b;
  b.stream = &pred;
  b.rows = 1;
  b.cols = 1;
  b.row_shape = shape;
  b.values = v;
  b.trace_ids = id;
  b.timestamp_ns = core::unix_now_ns();
  e.on_batch(b);
  e.publish_now();
  ASSERT_EQ(e.snapshot()->streams.size(), 1u);
  EXPECT_FALSE(e.snapshot()->streams[0].durable);
  EXPECT_EQ(e.snapshot()->streams[0].pending, 1u);
}
