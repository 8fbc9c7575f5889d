// Slices (attribution, cap, "other", restart), pre-joined rows (validation, window attribution)
// and performance findings (Wilson bound, baseline, abnormality level). The per-slice counts and
// metrics against pandas are in join_oracle.py.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>

#include <prometheus/text_serializer.h>

#include "agent/api/performance_json.hpp"
#include "agent/cli/performance_output.hpp"
#include "agent/performance/engine.hpp"
#include "agent/performance/findings.hpp"
#include "agent/performance/stream_join.hpp"
#include "core/config_reader.hpp"
#include "core/time.hpp"
#include "exporters/metrics/performance_metrics.hpp"

using namespace mltap;
using namespace mltap::performance;

namespace {

constexpr std::int64_t kS = 1'000'000'000;
constexpr std::int64_t kW = 60 * kS;
constexpr std::int64_t kT0 = 1'700'000'040 * kS / kW * kW;  // a window start

PerformanceConfig sliced_config(std::uint32_t max_values) {
  PerformanceConfig c;
  c.label_ttl = std::chrono::seconds(100);
  c.grace = std::chrono::seconds(10);
  c.window = std::chrono::seconds(60);
  c.max_pending = 1024;
  StreamSettings s;
  s.labels_stream = "t/labels";
  s.task = format::Task::binary;
  s.slice_column = "region";
  s.slice_max_values = max_values;
  c.streams["t/pred"] = s;
  return c;
}

PendingTable::Identity id() { return {"t/pred", "t/labels", format::Task::binary, 0}; }

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("mltap-slices-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

const core::PerformanceSlice* slice_of(const core::PerformanceWindow& w, const std::string& v) {
  for (const auto& s : w.slices) {
    if (s.value == v) return &s;
  }
  return nullptr;
}

// 4 predictions per region value 1, 2, 3 and one with a NaN region; regions 1 and 3 labelled
// right, region 2 wrong.
void feed(StreamJoin& j, std::uint64_t first_id) {
  const double regions[] = {1, 2, 3, NAN};
  std::uint64_t tid = first_id;
  for (double r : regions) {
    for (int k = 0; k < 4; ++k, ++tid) {
      const std::int64_t ts = kT0 + static_cast<std::int64_t>(tid % 50) * kS;
      j.prediction(tid, ts, 0.9, ts, j.slice_code(r));
      if (!std::isnan(r)) j.label(tid, ts + kS, r == 2 ? 0 : 1, ts + kS);
    }
  }
  j.flush();
}

}  // namespace

TEST(Slices, AttributesJoinsToTheirSliceAndCapsDistinctValues) {
  StreamJoin j(id(), sliced_config(2), "");
  feed(j, 1);
  const auto st = j.state();
  EXPECT_EQ(st.slice_column, "region");
  EXPECT_EQ(st.slice_other_rows, 4u);    // region 3: past the cap of 2
  EXPECT_EQ(st.slice_invalid_rows, 4u);  // NaN region
  ASSERT_EQ(st.windows.size(), 1u);
  const auto& w = st.windows[0];
  ASSERT_EQ(w.slices.size(), 3u);
  EXPECT_EQ(w.slices.back().value, "other");  // last
  const auto* s1 = slice_of(w, "1");
  const auto* s2 = slice_of(w, "2");
  const auto* other = slice_of(w, "other");
  ASSERT_TRUE(s1 && s2 && other);
  EXPECT_EQ(s1->predictions, 4u);
  EXPECT_EQ(s1->labelled, 4u);
  EXPECT_DOUBLE_EQ(*s1->metrics.accuracy, 1.0);
  EXPECT_DOUBLE_EQ(*s2->metrics.accuracy, 0.0);
  EXPECT_EQ(other->predictions, 8u);  // region 3 and NaN
  EXPECT_EQ(other->labelled, 4u);     // region 3's labels
  EXPECT_DOUBLE_EQ(other->coverage(), 0.5);
  EXPECT_EQ(w.labelled, 12u);
  EXPECT_DOUBLE_EQ(*w.metrics.accuracy, 8.0 / 12.0);
}

TEST(Slices, MappingCountsAndJoinsSurviveARestart) {
  TempDir dir;
  {
    StreamJoin j(id(), sliced_config(2), dir.path.string());
    feed(j, 1);
    // Pending across the restart: a prediction of region 2, labelled after it.
    j.prediction(1000, kT0 + 5 * kS, 0.1, kT0 + 5 * kS, j.slice_code(2));
    j.flush();
  }
  StreamJoin j(id(), sliced_config(2), dir.path.string());
  EXPECT_EQ(j.slice_code(1), 1u);  // the mapping is kept: 1 and 2 keep their indices
  EXPECT_EQ(j.slice_code(2), 2u);
  EXPECT_EQ(j.slice_code(7), kSliceOther);
  j.label(1000, kT0 + 6 * kS, 0, kT0 + 6 * kS);
  const auto st = j.state();
  ASSERT_EQ(st.windows.size(), 1u);
  const auto* s2 = slice_of(st.windows[0], "2");
  ASSERT_TRUE(s2);
  EXPECT_EQ(s2->predictions, 5u);
  EXPECT_EQ(s2->labelled, 5u);
  EXPECT_DOUBLE_EQ(*s2->metrics.accuracy, 1.0 / 5.0);  // the new pair is right (0.1 vs 0)
  EXPECT_EQ(slice_of(st.windows[0], "other")->labelled, 4u);
  EXPECT_EQ(st.slice_other_rows, 5u);  // + the lookup of 7 above
}

TEST(Slices, ColumnOfTheBatchIsTheSliceNotThePrediction) {
  StreamJoin j(id(), sliced_config(4), "");
  core::StreamInfo info;
  info.name = "t/pred";
  info.kind = format::StreamKind::predictions;
  info.feature_names = {"region", "score"};
  const std::vector<double> values = {5, 0.8, 6, 0.3};
  const std::vector<std::uint64_t> ids = {1, 2};
  core::DecodedBatch b;
  b.stream = &info;
  b.timestamp_ns = static_cast<std::uint64_t>(kT0);
  b.rows = 2;
  b.cols = 2;
  b.values = values;
  b.trace_ids = ids;
  j.add_predictions(b, kT0);
  j.label(1, kT0 + kS, 1, kT0 + kS);
  j.label(2, kT0 + kS, 1, kT0 + kS);
  const auto st = j.state();
  ASSERT_EQ(st.windows.size(), 1u);
  EXPECT_DOUBLE_EQ(*slice_of(st.windows[0], "5")->metrics.accuracy, 1.0);  // 0.8 >= 0.5
  EXPECT_DOUBLE_EQ(*slice_of(st.windows[0], "6")->metrics.accuracy, 0.0);  // 0.3 < 0.5
  EXPECT_EQ(st.counters.predictions_bad, 0u);
  // Without the column (other feature names): counted, not sliced, still joined.
  info.feature_names = {"a", "score"};
  const std::vector<double> one = {0.9};
  b.cols = 1;
  b.rows = 1;
  b.values = one;
  const std::vector<std::uint64_t> id3 = {3};
  b.trace_ids = id3;
  j.add_predictions(b, kT0);
  EXPECT_EQ(j.state().slice_missing_rows, 1u);
  EXPECT_EQ(j.state().counters.predictions, 3u);
}

TEST(Prejoined, RowsCountInTheirPredictionTimeWindowAndHostileRowsAreCounted) {
  PerformanceConfig c = sliced_config(4);
  c.streams["t/pred"].prejoined = true;
  c.streams["t/pred"].labels_stream = "t/pred";
  StreamJoin j({"t/pred", "t/pred", format::Task::binary, 0}, c, "");
  const std::int64_t now = kT0 + 300 * kS;
  const double t0 = static_cast<double>(kT0) / 1e9;
  EXPECT_TRUE(j.prejoined(0.9, 1, t0 + 1, now, now, 1.0));
  EXPECT_TRUE(j.prejoined(0.2, 1, t0 + 61, now, now, 1.0));  // next window
  EXPECT_TRUE(j.prejoined(0.2, 0, t0 + 62, now, now));
  EXPECT_FALSE(j.prejoined(NAN, 1, t0, now, now));
  EXPECT_FALSE(j.prejoined(1.5, 1, t0, now, now));          // not a probability
  EXPECT_FALSE(j.prejoined(0.5, INFINITY, t0, now, now));
  EXPECT_FALSE(j.prejoined(0.5, 1, NAN, now, now));
  EXPECT_FALSE(j.prejoined(0.5, 1, -5, now, now));
  EXPECT_FALSE(j.prejoined(0.5, 1, 1e300, now, now));
  EXPECT_FALSE(j.prejoined(0.5, 1, t0 + 3600, now, now));   // an hour ahead of the agent's clock
  EXPECT_FALSE(j.prejoined(0.5, 1, t0 - 30 * 86400, now, now));  // past retention
  core::DecodedBatch b;
  const std::vector<double> wide = {0.5, 1};
  b.rows = 1;
  b.cols = 2;
  b.values = wide;
  j.add_prejoined(b, now);
  const auto st = j.state();
  EXPECT_TRUE(st.prejoined);
  const auto& p = st.prejoined_counters;
  EXPECT_EQ(p.rows, 12u);
  EXPECT_EQ(p.accepted, 3u);
  EXPECT_EQ(p.bad_prediction, 2u);
  EXPECT_EQ(p.bad_label, 1u);
  EXPECT_EQ(p.bad_time, 3u);
  EXPECT_EQ(p.future, 1u);
  EXPECT_EQ(p.too_old, 1u);
  EXPECT_EQ(p.bad_shape, 1u);
  ASSERT_EQ(st.windows.size(), 2u);
  EXPECT_EQ(st.windows[0].start_unix_ns, kT0);
  EXPECT_EQ(st.windows[0].labelled, 1u);
  EXPECT_DOUBLE_EQ(*st.windows[0].metrics.accuracy, 1.0);
  EXPECT_EQ(st.windows[1].labelled, 2u);
  EXPECT_DOUBLE_EQ(*st.windows[1].metrics.accuracy, 0.5);
  EXPECT_DOUBLE_EQ(st.windows[1].coverage(), 1.0);
  ASSERT_EQ(st.windows[1].slices.size(), 1u);  // the row without a slice value is not sliced
  EXPECT_EQ(st.windows[1].slices[0].labelled, 1u);
}

TEST(Prejoined, ConfiguredStreamIsRoutedByTheEngine) {
  auto doc = core::load_text(
      "performance:\n  streams:\n    t/joined: {prejoined: true, task: binary}\n", "test.yaml");
  const auto cfg = parse_performance_config(core::ConfigSection(doc, "test.yaml", "").child("performance"));
  EXPECT_TRUE(cfg.streams.at("t/joined").prejoined);
  PerformanceEngine e(cfg, "");
  core::StreamInfo info;
  info.name = "t/joined";
  info.kind = format::StreamKind::labels;
  const double t = static_cast<double>(core::unix_now_ns()) / 1e9 - 10;
  const std::vector<double> values = {0.7, 1, t, 0.7, 0, t};
  core::DecodedBatch b;
  b.stream = &info;
  b.timestamp_ns = core::unix_now_ns();
  b.rows = 2;
  b.cols = 3;
  b.values = values;
  e.on_batch(b);
  e.publish_now();
  const auto snap = e.snapshot();
  ASSERT_EQ(snap->streams.size(), 1u);
  EXPECT_EQ(snap->streams[0].prejoined_counters.accepted, 2u);
  EXPECT_EQ(snap->labels_without_predictions_stream, 0u);
  // A prejoined stream with a labels_stream is a configuration error.
  auto bad = core::load_text("performance:\n  streams:\n    t/j: {prejoined: true, task: binary, labels_stream: x}\n",
                             "bad.yaml");
  EXPECT_THROW(parse_performance_config(core::ConfigSection(bad, "bad.yaml", "").child("performance")),
               core::ConfigError);
}

// Reference values: scipy.stats.norm.ppf(0.95) = 1.6448536269514722, norm.ppf(0.999) =
// 3.090232306167813; Wilson upper bound of 80/100 at z = 1.6448536...: 0.8588... from
// (p + z^2/2n + z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n) computed in Python.
TEST(Findings, NormalQuantileAndWilsonBound) {
  EXPECT_NEAR(normal_quantile(0.95), 1.6448536269514722, 1e-8);
  EXPECT_NEAR(normal_quantile(0.999), 3.090232306167813, 1e-8);
  EXPECT_NEAR(normal_quantile(0.01), -2.3263478740408408, 1e-8);
  const double z = normal_quantile(0.95);
  const double p = 0.8, n = 100;
  const double expect = (p + z * z / (2 * n) + z * std::sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n);
  EXPECT_NEAR(wilson_upper(0.8, 100, z), expect, 1e-12);
  EXPECT_GT(wilson_upper(0.8, 100, z), wilson_upper(0.8, 10000, z));  // tighter with more labels
  EXPECT_DOUBLE_EQ(wilson_upper(1.0, 50, z), 1.0);
}

namespace {

core::PerformanceWindow window(std::int64_t start, double accuracy, std::uint64_t n,
                               std::vector<std::pair<std::string, double>> slices = {}) {
  core::PerformanceWindow w;
  w.start_unix_ns = start;
  w.predictions = n;
  w.labelled = n;
  w.metrics.accuracy = accuracy;
  for (auto& [v, acc] : slices) {
    core::PerformanceSlice s;
    s.value = v;
    s.predictions = s.labelled = n / 2;
    s.metrics.accuracy = acc;
    w.slices.push_back(s);
  }
  return w;
}

core::PerformanceStreamState stream_with(std::vector<core::PerformanceWindow> windows) {
  core::PerformanceStreamState st;
  st.stream = "m/pred";
  st.task = format::Task::binary;
  st.window_ns = kW;
  st.windows = std::move(windows);
  return st;
}

core::InputDrift input(std::uint32_t drifted, bool multivariate = false) {
  core::InputDrift in;
  in.stream = "m/features";
  in.analyzed = true;
  in.features_analyzed = 10;
  in.drifted_features = drifted;
  for (std::uint32_t i = 0; i < drifted; ++i) in.drifted.push_back("f" + std::to_string(i));
  in.multivariate_drift = multivariate;
  return in;
}

}  // namespace

TEST(Findings, DropNeedsEnoughLabelsForTheBound) {
  constexpr auto kNow = static_cast<std::uint64_t>(kT0 + 10 * kW);
  FindingsConfig cfg;
  cfg.min_labels = 200;
  cfg.reference_windows = 2;
  PerformanceFindings f(cfg);
  // Reference: 0.90 over two windows of 1000; then 0.86 with 1000 labels (upper ~0.878 < 0.88):
  // a drop; 0.86 with 150 labels: not judged (too few).
  auto st = stream_with({window(kT0, 0.9, 1000), window(kT0 + kW, 0.9, 1000), window(kT0 + 2 * kW, 0.86, 150)});
  f.evaluate(st, "m", nullptr, {input(0)}, kNow + 1);
  EXPECT_TRUE(f.open().empty());
  EXPECT_NEAR(*f.baseline("m/pred", "all"), 0.9, 1e-12);
  // 0.87 with 300 labels: upper bound ~0.899 > 0.88: not significant.
  st.windows.push_back(window(kT0 + 3 * kW, 0.87, 300));
  f.evaluate(st, "m", nullptr, {input(0)}, kNow + 2);
  EXPECT_TRUE(f.open().empty());
  st.windows.push_back(window(kT0 + 4 * kW, 0.86, 1000));
  f.evaluate(st, "m", nullptr, {input(0)}, kNow + 3);
  ASSERT_EQ(f.open().size(), 1u);
  const auto& fd = f.open()[0];
  EXPECT_EQ(fd.kind, core::FindingKind::performance);
  EXPECT_EQ(fd.component, "m");
  EXPECT_EQ(fd.reason, "concept_shift");  // inputs analyzed, none drifted
  EXPECT_EQ(fd.severity, core::Severity::warning);
  EXPECT_GE(fd.id, PerformanceFindings::kFirstId);
  EXPECT_EQ(fd.onset_unix_ns, static_cast<std::uint64_t>(kT0 + 4 * kW));
  EXPECT_NE(fd.summary.find("concept shift"), std::string::npos) << fd.summary;
  // Recovered: closed.
  st.windows.push_back(window(kT0 + 5 * kW, 0.91, 1000));
  f.evaluate(st, "m", nullptr, {input(0)}, kNow + 4);
  EXPECT_TRUE(f.open().empty());
  ASSERT_EQ(f.closed().size(), 1u);
  EXPECT_EQ(f.closed()[0].closed_unix_ns, kNow + 4);
}

TEST(Findings, AbnormalityLevelFollowsTheInputsAndNamesTheSlice) {
  FindingsConfig cfg;
  cfg.min_labels = 100;
  cfg.reference_windows = 1;
  PerformanceFindings f(cfg);
  // Overall accuracy holds within the tolerance; slice "eu" collapses.
  auto st = stream_with({window(kT0, 0.9, 2000, {{"eu", 0.9}, {"us", 0.9}}),
                         window(kT0 + kW, 0.88, 2000, {{"eu", 0.6}, {"us", 0.95}})});
  f.evaluate(st, "m", nullptr, {input(1)}, 10);
  ASSERT_EQ(f.open().size(), 1u);
  EXPECT_EQ(f.open()[0].reason, "one_feature_drifted");
  ASSERT_FALSE(f.open()[0].top.empty());
  EXPECT_EQ(f.open()[0].top[0].feature, "slice:eu");
  EXPECT_EQ(f.open()[0].top.size(), 1u);  // "all" and "us" did not drop
  EXPECT_EQ(f.open()[0].severity, core::Severity::critical);  // 30 points
  const auto first = f.open()[0].id;
  // Now many features drifted: a new level is a material change (new id, supersedes).
  f.evaluate(st, "m", nullptr, {input(3)}, 11);
  ASSERT_EQ(f.open().size(), 1u);
  EXPECT_EQ(f.open()[0].reason, "input_distribution_shift");
  EXPECT_EQ(f.open()[0].supersedes, first);
  EXPECT_NE(f.open()[0].id, first);
  f.evaluate(st, "m", nullptr, {input(0, true)}, 12);
  EXPECT_EQ(f.open()[0].reason, "input_distribution_shift");  // multivariate
  f.evaluate(st, "m", nullptr, {}, 13);
  EXPECT_EQ(f.open()[0].reason, "inputs_unknown");
}

TEST(Findings, FloorAndEstimatedEvidence) {
  FindingsConfig cfg;
  cfg.min_labels = 100;
  StreamSettings s;
  s.floor = 0.95;
  PerformanceFindings f(cfg);
  // A floor needs no reference windows: the first judged window already counts.
  f.evaluate(stream_with({window(kT0, 0.9, 5000)}), "m", &s, {input(0)}, 1);
  ASSERT_EQ(f.open().size(), 1u);
  // An estimate (label-free) feeds the same decision with its own bound.
  PerformanceFindings g(cfg);
  MetricEvidence e{"all", "accuracy", 0.7, 0.75, 10000, Basis::estimated};
  g.decide("m/pred", "m", {e}, {{"all", 0.9}}, kT0, {input(0)}, 5);
  ASSERT_EQ(g.open().size(), 1u);
  EXPECT_NE(g.open()[0].summary.find("estimated"), std::string::npos);
  e.upper = 0.89;  // within the tolerance of the baseline: no drop
  g.decide("m/pred", "m", {e}, {{"all", 0.9}}, kT0, {input(0)}, 6);
  EXPECT_TRUE(g.open().empty());
}

// The newest window, before its labels arrive, is judged on its label-free estimate against the
// pinned baseline; without an estimate (withheld) it is not judged and the finding closes.
TEST(Findings, TheNewestWindowWithoutLabelsIsJudgedOnItsEstimate) {
  constexpr auto kNow = static_cast<std::uint64_t>(kT0 + 10 * kW);
  FindingsConfig cfg;
  cfg.min_labels = 200;
  cfg.reference_windows = 2;
  PerformanceFindings f(cfg);
  auto newest = window(kT0 + 2 * kW, 0.5, 20);  // 20 labels: too few for a realized judgement
  newest.predictions = 5000;
  core::PerformanceEstimate est;
  est.predictions = 5000;
  est.accuracy = core::EstimatedValue{0.70, 0.66, 0.74};
  newest.estimate = est;
  auto st = stream_with({window(kT0, 0.9, 1000), window(kT0 + kW, 0.9, 1000), newest});
  f.evaluate(st, "m", nullptr, {input(0)}, kNow);
  ASSERT_EQ(f.open().size(), 1u);
  EXPECT_NE(f.open()[0].summary.find("estimated"), std::string::npos) << f.open()[0].summary;
  EXPECT_EQ(f.open()[0].onset_unix_ns, static_cast<std::uint64_t>(kT0 + 2 * kW));
  // An estimate whose band reaches the baseline's tolerance is no drop.
  st.windows.back().estimate->accuracy = core::EstimatedValue{0.86, 0.80, 0.92};
  f.evaluate(st, "m", nullptr, {input(0)}, kNow + 1);
  EXPECT_TRUE(f.open().empty());
  // Withheld: nothing to judge the newest window on; nothing opens.
  st.windows.back().estimate->accuracy.reset();
  st.windows.back().estimate->withheld = core::EstimateWithheld::outside_support;
  f.evaluate(st, "m", nullptr, {input(0)}, kNow + 2);
  EXPECT_TRUE(f.open().empty());
}

// Open findings, pinned baselines and the next id are kept in the state directory: after a
// restart the same finding is open under the same id (no new notification) and the baseline is
// not pinned again from later windows; an unusable document is moved aside, not fatal.
TEST(Findings, OpenFindingsAndBaselinesSurviveARestart) {
  constexpr auto kNow = static_cast<std::uint64_t>(kT0 + 10 * kW);
  TempDir dir;
  FindingsConfig cfg;
  cfg.min_labels = 200;
  cfg.reference_windows = 2;
  auto st = stream_with({window(kT0, 0.9, 1000), window(kT0 + kW, 0.9, 1000), window(kT0 + 2 * kW, 0.7, 1000)});
  std::uint64_t id = 0;
  {
    PerformanceFindings f(cfg);
    f.attach_state(dir.path.string());
    f.evaluate(st, "m", nullptr, {input(0)}, kNow);
    ASSERT_EQ(f.open().size(), 1u);
    id = f.open()[0].id;
    f.save_if_changed();
  }
  PerformanceFindings g(cfg);
  g.attach_state(dir.path.string());
  ASSERT_EQ(g.open().size(), 1u);
  EXPECT_EQ(g.open()[0].id, id);
  EXPECT_EQ(g.open()[0].stream, "m/pred");
  EXPECT_EQ(g.open()[0].onset_unix_ns, static_cast<std::uint64_t>(kT0 + 2 * kW));
  EXPECT_NEAR(*g.baseline("m/pred", "all"), 0.9, 1e-12);
  // After the restart the windows replayed may be fewer: the baseline stays the pinned one and
  // the drop keeps its id.
  auto replayed = stream_with({window(kT0 + 2 * kW, 0.7, 1000)});
  g.evaluate(replayed, "m", nullptr, {input(0)}, kNow + 3);
  ASSERT_EQ(g.open().size(), 1u);
  EXPECT_EQ(g.open()[0].id, id);
  EXPECT_TRUE(g.closed().empty());
  // A new finding after the restart gets an id after the kept ones.
  g.evaluate(stream_with({window(kT0 + 3 * kW, 0.9, 1000)}), "m", nullptr, {input(0)}, kNow + 4);
  EXPECT_TRUE(g.open().empty());
  g.evaluate(stream_with({window(kT0 + 4 * kW, 0.6, 1000)}), "m", nullptr, {input(0)}, kNow + 5);
  ASSERT_EQ(g.open().size(), 1u);
  EXPECT_GT(g.open()[0].id, id);
  g.save_if_changed();
  // A document of garbage: moved aside, the findings start afresh.
  const auto doc = dir.path / "performance-findings.json";
  ASSERT_TRUE(std::filesystem::exists(doc));
  { std::ofstream(doc, std::ios::trunc) << "{not json"; }
  PerformanceFindings h(cfg);
  h.attach_state(dir.path.string());
  EXPECT_TRUE(h.open().empty());
  EXPECT_FALSE(std::filesystem::exists(doc));
}

// The slices reach Prometheus (bounded `slice` label), the JSON and `mltap performance --slice`.
TEST(Slices, ExportedAsMetricsJsonAndCliRows) {
  StreamJoin j(id(), sliced_config(2), "");
  feed(j, 1);
  auto snap = std::make_shared<core::PerformanceSnapshot>();
  snap->streams.push_back(j.state());
  metrics::PerformanceCollector c([snap] { return snap; });
  const auto families = c.Collect();
  const std::string text = prometheus::TextSerializer().Serialize(families);
  EXPECT_NE(text.find("mltap_performance_slice_realized{stream=\"t/pred\",slice=\"1\",metric=\"accuracy\"} 1"),
            std::string::npos) << text;
  EXPECT_NE(text.find("mltap_performance_slice_realized{stream=\"t/pred\",slice=\"2\",metric=\"accuracy\"} 0"),
            std::string::npos);
  EXPECT_NE(text.find("mltap_performance_slice_label_coverage_ratio{stream=\"t/pred\",slice=\"other\"} 0.5"),
            std::string::npos);
  EXPECT_NE(text.find("mltap_performance_slice_rows_total{stream=\"t/pred\",reason=\"over_cap\"} 4"), std::string::npos);
  std::ifstream doc(MLTAP_METRICS_DOC);
  const std::string documented((std::istreambuf_iterator<char>(doc)), std::istreambuf_iterator<char>());
  for (const auto& f : families) {
    EXPECT_NE(documented.find("`" + f.name + "`"), std::string::npos) << f.name << " not in docs/metrics.md";
  }
  const auto json = api::to_json(snap->streams[0], INT64_MIN);
  ASSERT_EQ(json["windows"][0]["slices"].size(), 3u);
  EXPECT_EQ(json["windows"][0]["slices"][0]["slice"], "1");
  EXPECT_EQ(json["slices"]["rows_over_cap"], 4);
  std::ostringstream out;
  cli::print_performance(json, out, "2");
  EXPECT_NE(out.str().find("region=2"), std::string::npos) << out.str();
  EXPECT_EQ(out.str().find("region=1"), std::string::npos) << out.str();
}
