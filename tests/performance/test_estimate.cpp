// Label-free estimates (CBPE): the isotonic map against a brute-force characterization, the
// held-out choice of calibration, the sampling-error band's coverage, the support check and the
// window sums' survival across a reopen. The whole estimate is checked against scikit-learn in
// cbpe_oracle.py.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>

#include <prometheus/text_serializer.h>

#include "agent/performance/calibration.hpp"
#include "agent/performance/estimate.hpp"
#include "agent/performance/stream_join.hpp"
#include "core/config_reader.hpp"
#include "agent/api/performance_json.hpp"
#include "agent/cli/performance_output.hpp"
#include "exporters/metrics/performance_metrics.hpp"

namespace mltap::performance {
namespace {

// The isotonic fit at point i is max over j <= i of min over k >= i of the (weighted) mean of
// points j..k: an O(n^3) characterization independent of pool-adjacent-violators.
std::vector<double> brute_isotonic(const std::vector<double>& y, const std::vector<double>& w) {
  const std::size_t n = y.size();
  std::vector<double> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    double best = -1e300;
    for (std::size_t j = 0; j <= i; ++j) {
      double low = 1e300;
      for (std::size_t k = i; k < n; ++k) {
        double s = 0, sw = 0;
        for (std::size_t m = j; m <= k; ++m) {
          s += y[m] * w[m];
          sw += w[m];
        }
        low = std::min(low, s / sw);
      }
      best = std::max(best, low);
    }
    out[i] = best;
  }
  return out;
}

TEST(Isotonic, MatchesBruteForceWithTies) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 14);
    std::vector<JoinedPair> pairs;
    for (int i = 0; i < n; ++i) {
      // Few distinct scores: ties are common.
      pairs.push_back(JoinedPair{static_cast<double>(rng() % 6) / 5.0, static_cast<double>(rng() % 2)});
    }
    const IsotonicMap m = IsotonicMap::fit(pairs);
    std::vector<double> xs, ys, ws;
    auto sorted = pairs;
    std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.prediction < b.prediction; });
    for (const auto& p : sorted) {
      if (!xs.empty() && xs.back() == p.prediction) {
        ys.back() += p.label;
        ws.back() += 1;
      } else {
        xs.push_back(p.prediction);
        ys.push_back(p.label);
        ws.push_back(1);
      }
    }
    for (std::size_t i = 0; i < ys.size(); ++i) ys[i] /= ws[i];
    const auto want = brute_isotonic(ys, ws);
    ASSERT_LE(m.xs().size(), xs.size());
    for (std::size_t i = 0; i < xs.size(); ++i) EXPECT_NEAR(m(xs[i]), want[i], 1e-12) << "trial " << trial;
    for (std::size_t i = 1; i < m.ys().size(); ++i) EXPECT_LE(m.ys()[i - 1], m.ys()[i]);
  }
}

TEST(Isotonic, InterpolatesAndClips) {
  const std::vector<JoinedPair> pairs = {{0.2, 0}, {0.4, 1}, {0.6, 0}, {0.8, 1}};
  const IsotonicMap m = IsotonicMap::fit(pairs);  // fitted 0, 0.5, 0.5, 1
  EXPECT_DOUBLE_EQ(m(0.0), 0.0);
  EXPECT_DOUBLE_EQ(m(0.3), 0.25);
  EXPECT_DOUBLE_EQ(m(0.5), 0.5);
  EXPECT_DOUBLE_EQ(m(0.7), 0.75);
  EXPECT_DOUBLE_EQ(m(1.0), 1.0);
}

TEST(Calibration, IsotonicChosenOnlyWhenHeldOutErrorIsLower) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<JoinedPair> skewed, calibrated;
  for (int i = 0; i < 3000; ++i) {
    const double s = u(rng);
    skewed.push_back(JoinedPair{s, u(rng) < s * s * s ? 1.0 : 0.0});  // over-confident scores
    calibrated.push_back(JoinedPair{s, u(rng) < s ? 1.0 : 0.0});
  }
  const auto a = choose_calibration(skewed, 5, 10);
  EXPECT_TRUE(a.calibrated);
  EXPECT_LT(a.ece_calibrated, a.ece_raw);
  EXPECT_GT(a.ece_raw, 0.1);
  EXPECT_NEAR(a.apply(0.5), 0.125, 0.06);
  const auto b = choose_calibration(calibrated, 5, 10);
  EXPECT_EQ(b.calibrated, b.ece_calibrated < b.ece_raw);
  EXPECT_LT(b.ece_raw, 0.05);
}

// Under the estimate's assumption (labels Bernoulli(p) given calibrated p), the realized
// accuracy and F1 of many draws fall inside the +-3 sigma band about 99.7% of the time, and the
// band's sigma matches the draws' spread.
TEST(Estimate, BandCoversDrawnLabels) {
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<double> p(400);
  for (auto& v : p) v = std::pow(u(rng), 0.7);
  EstimateSums s{};
  for (double v : p) {
    ++s.n;
    const auto bin = std::min<std::uint32_t>(kEstimateBins - 1, static_cast<std::uint32_t>(v * kEstimateBins));
    if (v >= 0.5) {
      ++s.pos_bin[bin];
      ++s.n_pos;
      s.tp += v;
      s.var_pos += v * (1 - v);
    } else {
      ++s.neg_bin[bin];
      s.fn += v;
      s.var_neg += v * (1 - v);
    }
  }
  const auto e = estimate_from_sums(s);
  // The reference's calibration error widens the band (a reference of 25 pairs per bin).
  const std::vector<double> bin_var(kEstimateBins, 0.25 / 25);
  const auto wide = estimate_from_sums(s, bin_var);
  ASSERT_TRUE(wide.accuracy && wide.f1);
  EXPECT_DOUBLE_EQ(wide.accuracy->value, e.accuracy->value);
  EXPECT_GT(wide.accuracy->upper - wide.accuracy->value, 1.5 * (e.accuracy->upper - e.accuracy->value));
  EXPECT_GT(wide.f1->value - wide.f1->lower, e.f1->value - e.f1->lower);
  ASSERT_TRUE(e.accuracy && e.f1 && e.precision && e.recall);
  int in_acc = 0, in_f1 = 0;
  const int draws = 4000;
  double sum = 0, sum2 = 0;
  for (int d = 0; d < draws; ++d) {
    double tp = 0, fp = 0, fn = 0, tn = 0;
    for (double v : p) {
      const bool y = u(rng) < v;
      const bool yhat = v >= 0.5;
      tp += y && yhat;
      fp += !y && yhat;
      fn += y && !yhat;
      tn += !y && !yhat;
    }
    const double acc = (tp + tn) / static_cast<double>(p.size());
    const double f1 = 2 * tp / (2 * tp + fp + fn);
    sum += acc;
    sum2 += acc * acc;
    in_acc += acc >= e.accuracy->lower && acc <= e.accuracy->upper;
    in_f1 += f1 >= e.f1->lower && f1 <= e.f1->upper;
  }
  EXPECT_GE(in_acc, draws * 0.985);
  EXPECT_GE(in_f1, draws * 0.985);
  const double mean = sum / draws, sd = std::sqrt(sum2 / draws - mean * mean);
  EXPECT_NEAR(mean, e.accuracy->value, 0.003);
  EXPECT_NEAR(sd, (e.accuracy->upper - e.accuracy->value) / 3, 0.15 * sd);
}

TEST(Estimate, UndefinedMetricsAreAbsent) {
  EstimateSums s{};  // all predicted negative, expected positives 0
  s.n = 10;
  const auto e = estimate_from_sums(s);
  ASSERT_TRUE(e.accuracy);
  EXPECT_DOUBLE_EQ(e.accuracy->value, 1.0);
  EXPECT_FALSE(e.precision);
  EXPECT_FALSE(e.recall);
  EXPECT_FALSE(e.f1);
}

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/mltap-estimate-XXXXXX";
    path = ::mkdtemp(t);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

PerformanceConfig small_reference() {
  PerformanceConfig c;
  c.reference_pairs = 200;
  c.estimate_min_bin_pairs = 10;
  c.estimate_max_unsupported = 0.05;
  return c;
}

constexpr std::int64_t kHour = 3'600'000'000'000;

// Reference scores in [0, 0.6): a window of scores in [0.7, 1] left its support.
void feed_reference(Estimator& e) {
  for (int i = 0; i < 200; ++i) {
    const double s = (i % 60) / 100.0;
    e.on_joined(s, (i % 7) < s * 10 ? 1 : 0, 5 * kHour);
  }
}

TEST(Estimate, WithheldWithoutReferenceAndOutsideSupport) {
  Estimator e("", "perf.t.0123456789abcdef", "t", kHour, small_reference());
  e.on_prediction(0, 0.3);
  EXPECT_EQ(e.window_estimate(0).withheld, core::EstimateWithheld::no_reference);
  feed_reference(e);
  ASSERT_TRUE(e.fitted());
  EXPECT_EQ(e.window_estimate(0).withheld, core::EstimateWithheld::no_reference);  // before the fit
  for (int i = 0; i < 100; ++i) e.on_prediction(kHour, (i % 50) / 100.0);
  const auto in = e.window_estimate(kHour);
  EXPECT_EQ(in.withheld, core::EstimateWithheld::none);
  EXPECT_EQ(in.predictions, 100u);
  EXPECT_TRUE(in.accuracy);
  for (int i = 0; i < 100; ++i) e.on_prediction(2 * kHour, i < 94 ? 0.3 : 0.9);  // 6% unsupported
  const auto out = e.window_estimate(2 * kHour);
  EXPECT_EQ(out.withheld, core::EstimateWithheld::outside_support);
  EXPECT_EQ(out.unsupported, 6u);
  EXPECT_FALSE(out.accuracy);
  EXPECT_NE(out.withheld_detail.find("6.0%"), std::string::npos) << out.withheld_detail;
  for (int i = 0; i < 100; ++i) e.on_prediction(3 * kHour, i < 96 ? 0.3 : 1.7);  // 4%: allowed
  EXPECT_EQ(e.window_estimate(3 * kHour).withheld, core::EstimateWithheld::none);
}

TEST(Estimate, ReferenceAndWindowSumsSurviveReopen) {
  TempDir dir;
  const std::string stem = "perf.t.0123456789abcdef";
  core::PerformanceEstimate before;
  double p_before = 0;
  {
    Estimator e(dir.path, stem, "t", kHour, small_reference());
    feed_reference(e);
    for (int i = 0; i < 300; ++i) e.on_prediction(7 * kHour, (i % 55) / 100.0);
    before = e.window_estimate(7 * kHour);
    p_before = e.calibrated(0.33);
    // No destructor flush is needed: the sums are in a MAP_SHARED file (as after kill -9).
  }
  Estimator again(dir.path, stem, "t", kHour, small_reference());
  ASSERT_TRUE(again.fitted());
  const auto r = again.reference_state();
  EXPECT_EQ(r.pairs, 200u);
  EXPECT_EQ(r.fitted_unix_ns, 5 * kHour);
  EXPECT_DOUBLE_EQ(again.calibrated(0.33), p_before);
  const auto after = again.window_estimate(7 * kHour);
  ASSERT_TRUE(before.accuracy && after.accuracy && after.f1 && before.f1);
  EXPECT_EQ(after.predictions, 300u);
  EXPECT_DOUBLE_EQ(after.accuracy->value, before.accuracy->value);
  EXPECT_DOUBLE_EQ(after.f1->upper, before.f1->upper);
  // Another threshold scores differently: the sums start over (the reference stays).
  auto other = small_reference();
  other.threshold = 0.3;
  Estimator changed(dir.path, stem, "t", kHour, other);
  EXPECT_TRUE(changed.fitted());
  EXPECT_EQ(changed.window_estimate(7 * kHour).withheld, core::EstimateWithheld::no_reference);
}

// Through the join, with a state directory: the estimates of a window with no labels are the same
// after the join is reopened (a restart), and the reference is not collected again.
TEST(Estimate, JoinReopenKeepsEstimates) {
  TempDir dir;
  auto cfg = small_reference();
  cfg.reference_pairs = 50;
  cfg.estimate_min_bin_pairs = 1;
  const PendingTable::Identity id{"e/pred", "e/labels", format::Task::binary, 0};
  const std::int64_t t0 = 1000 * kHour;
  auto find = [](const core::PerformanceStreamState& st, std::int64_t start) {
    for (const auto& w : st.windows) {
      if (w.start_unix_ns == start) return w;
    }
    return core::PerformanceWindow{};
  };
  core::PerformanceWindow before;
  {
    StreamJoin j(id, cfg, dir.path);
    for (int i = 0; i < 50; ++i) {
      const double s = (i % 10) / 10.0 + 0.05;
      j.prediction(1 + i, t0 + i, s, t0 + i);
      j.label(1 + i, t0 + i + 1, (i % 3) == 0 || s > 0.7 ? 1 : 0, t0 + i + 1);
    }
    for (int i = 0; i < 100; ++i) j.prediction(1000 + i, t0 + kHour + i, (i % 20) / 20.0, t0 + kHour + i);
    j.flush();
    const auto st = j.state();
    ASSERT_TRUE(st.reference && st.reference->fitted);
    before = find(st, t0 + kHour);
    ASSERT_TRUE(before.estimate && before.estimate->accuracy) << before.estimate->withheld_detail;
    EXPECT_EQ(before.estimate->predictions, 100u);
    EXPECT_EQ(find(st, t0).estimate->withheld, core::EstimateWithheld::no_reference);
  }
  StreamJoin again(id, cfg, dir.path);
  const auto st = again.state();
  ASSERT_TRUE(st.reference && st.reference->fitted);
  EXPECT_EQ(st.reference->pairs, 50u);
  const auto after = find(st, t0 + kHour);
  ASSERT_TRUE(after.estimate && after.estimate->accuracy);
  EXPECT_EQ(after.estimate->predictions, 100u);
  EXPECT_DOUBLE_EQ(after.estimate->accuracy->value, before.estimate->accuracy->value);
  EXPECT_DOUBLE_EQ(after.estimate->f1->lower, before.estimate->f1->lower);
}

TEST(Estimate, ConfigKeysStrict) {
  auto parse = [](const std::string& text) {
    core::ConfigSection top(core::load_text(text, "t.yaml"), "t.yaml", "");
    auto c = parse_performance_config(top.child("performance"));
    top.finish();
    return c;
  };
  const auto c = parse("performance:\n  reference_pairs: 500\n  estimate_min_bin_pairs: 3\n"
                       "  estimate_max_unsupported: 0.2\n");
  EXPECT_EQ(c.reference_pairs, 500u);
  EXPECT_EQ(c.estimate_min_bin_pairs, 3u);
  EXPECT_DOUBLE_EQ(c.estimate_max_unsupported, 0.2);
  EXPECT_EQ(parse("performance:\n  reference_pairs: 0\n").reference_pairs, 0u);
  try {
    parse("performance:\n  window: 1h\n  reference_pairs: 7\n");
    FAIL();
  } catch (const core::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("t.yaml:3:"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse("performance:\n  estimate_max_unsupported: 1.5\n"), core::ConfigError);
}

// What users see: Prometheus (the latest window with predictions, bounded labels, documented
// names), the JSON per window (estimate beside realized) and `mltap performance`'s table.
TEST(Estimate, ExportedBesideRealized) {
  auto snap = std::make_shared<core::PerformanceSnapshot>();
  core::PerformanceStreamState s;
  s.stream = "c/pred";
  s.task = format::Task::binary;
  s.window_ns = kHour;
  s.reference = core::EstimateReference{"first_joined_pairs", 2000, 2000, true, 5 * kHour, true, 0.12, 0.02};
  core::PerformanceWindow w1, w2;
  w1.start_unix_ns = 7 * kHour;
  w1.predictions = 400;
  w1.labelled = 400;
  w1.metrics.accuracy = 0.81;
  w1.estimate = core::PerformanceEstimate{};
  w1.estimate->predictions = 400;
  w1.estimate->accuracy = core::EstimatedValue{0.8, 0.75, 0.85};
  w2.start_unix_ns = 8 * kHour;
  w2.predictions = 300;
  w2.estimate = core::PerformanceEstimate{};
  w2.estimate->predictions = 300;
  w2.estimate->unsupported = 90;
  w2.estimate->withheld = core::EstimateWithheld::outside_support;
  w2.estimate->withheld_detail = "scores outside the reference's support";
  s.windows = {w1, w2};
  snap->streams.push_back(s);
  const auto families = metrics::PerformanceCollector([snap] { return snap; }).Collect();
  const std::string text = prometheus::TextSerializer().Serialize(families);
  EXPECT_NE(text.find("mltap_performance_estimate_withheld{stream=\"c/pred\",reason=\"outside_support\"} 1"),
            std::string::npos) << text;
  EXPECT_NE(text.find("mltap_performance_estimate_withheld{stream=\"c/pred\",reason=\"no_reference\"} 0"),
            std::string::npos);
  EXPECT_EQ(text.find("mltap_performance_estimated{"), std::string::npos);  // the newest is withheld
  EXPECT_NE(text.find("mltap_performance_estimate_reference_calibration_error{stream=\"c/pred\",scores=\"isotonic\"} 0.02"),
            std::string::npos);
  std::ifstream doc(MLTAP_METRICS_DOC);
  const std::string documented((std::istreambuf_iterator<char>(doc)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(documented.empty());
  for (const auto& f : families) {
    EXPECT_NE(documented.find("`" + f.name + "`"), std::string::npos) << f.name << " not in docs/metrics.md";
  }
  // An estimate in the newest window: value and band as three series.
  snap->streams[0].windows.pop_back();
  const std::string text2 =
      prometheus::TextSerializer().Serialize(metrics::PerformanceCollector([snap] { return snap; }).Collect());
  EXPECT_NE(text2.find("mltap_performance_estimated{stream=\"c/pred\",metric=\"accuracy\",bound=\"lower\"} 0.75"),
            std::string::npos) << text2;
  EXPECT_EQ(text2.find("metric=\"f1\",bound"), std::string::npos);  // undefined: absent

  s.windows = {w1, w2};
  const auto j = api::to_json(s, INT64_MIN);
  EXPECT_EQ(j["reference"]["calibration"], "isotonic");
  EXPECT_DOUBLE_EQ(j["windows"][0]["estimate"]["metrics"]["accuracy"]["upper"].get<double>(), 0.85);
  EXPECT_DOUBLE_EQ(j["windows"][0]["metrics"]["accuracy"].get<double>(), 0.81);
  EXPECT_EQ(j["windows"][1]["estimate"]["withheld"], "outside_support");
  std::ostringstream out;
  cli::print_performance(j, out);
  const std::string shown = out.str();
  const auto band_at = shown.find("0.800 [0.750,0.850]");
  ASSERT_NE(band_at, std::string::npos) << shown;
  const auto realized_at = shown.find("0.8100", band_at);  // the realized value beside it
  ASSERT_NE(realized_at, std::string::npos) << shown;
  EXPECT_EQ(shown.find('\n', band_at), shown.find('\n', realized_at)) << shown;
  EXPECT_NE(out.str().find("withheld (outside_support)"), std::string::npos) << out.str();
}

}  // namespace
}  // namespace mltap::performance
