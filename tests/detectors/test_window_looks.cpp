// Window-based drift through the real engine with fast looks (engine_looks.cpp): a 1 sd shift on
// one of 30 N(0,1) features is found within a small fraction of a window (it used to wait for the
// window to close), and the looks' p-value gate spends no more than drift.fdr per window on
// same-population data. bench/detectors/cusum_delay measures the full table against CUSUM
// (docs/detectors.md, "Fast looks").
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "agent/detectors/engine.hpp"
#include "gaussian_stream.hpp"

using namespace mltap;
using namespace mltap::detectors;

namespace {

constexpr std::size_t kFeatures = 30;

struct Stream : test::GaussianStream {
  Stream(EngineConfig c, std::uint64_t seed) : GaussianStream(std::move(c), seed, kFeatures) {}
};

// Window drift alone (as bench/detectors/cusum_delay --mode window): the default window of 5,000
// records, no sequential detectors.
EngineConfig window_config(std::uint64_t look_records) {
  EngineConfig c;
  c.defaults.window_time = std::chrono::nanoseconds(0);
  c.defaults.staleness.enabled = false;
  c.defaults.throughput.enabled = false;
  c.defaults.sequential.enabled = false;
  c.defaults.drift.look_records = look_records;
  return c;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Records from the first shifted record to the drift finding (inclusive), per run: a fast look
// names its last record (alarm_record), a window close is the record count fed (batches of 8
// divide the window).
std::vector<double> drift_delays(std::uint64_t look_records, double d, int runs, std::uint64_t seed) {
  std::vector<double> out;
  std::mt19937_64 g(seed);
  for (int run = 0; run < runs; ++run) {
    Stream s(window_config(look_records), g());
    const std::size_t changed = g() % kFeatures;
    const std::uint64_t start = 20000 + 1000 + g() % 5000;
    while (s.fed() < start) s.feed(std::min<std::uint64_t>(1000, start - s.fed()), changed, 0);
    EXPECT_TRUE(s.snapshot()->open_findings.empty());
    double delay = std::numeric_limits<double>::infinity();
    while (s.fed() - start < 20000 && !std::isfinite(delay)) {
      s.feed(8, changed, d);
      for (const auto& f : s.snapshot()->open_findings) {
        if (f.kind != core::FindingKind::drift) continue;
        EXPECT_FALSE(f.top.empty());
        if (f.top.empty()) continue;
        const auto& t = f.top.front();
        EXPECT_EQ(t.feature, "f" + std::to_string(changed)) << f.summary;
        if (t.method == "segment_mean") {
          EXPECT_GE(t.onset_record, start - std::min<std::uint64_t>(start, 4096)) << f.summary;
          EXPECT_GE(t.alarm_record, start) << "alarm before the change: " << f.summary;
          EXPECT_LE(t.score, 2 * d) << f.summary;  // |mean shift| / sd, a lower bound of W1 / sd
          delay = static_cast<double>(t.alarm_record - start + 1);
        } else {
          delay = static_cast<double>(s.fed() - start);
        }
      }
    }
    out.push_back(delay);
  }
  return out;
}

TEST(FastLooks, OneSdShiftFoundWithinAFractionOfAWindow) {
  // CUSUM's median at this shift is 38 records (docs/detectors.md); the bench measures 56 for
  // fast looks. A window that waits for its close needs ~2,400 (the control below).
  const auto fast = drift_delays(16, 1.0, 11, 7);
  EXPECT_LE(median(fast), 100) << "fast looks lost their speed";
  for (double x : fast) EXPECT_LE(x, 400);
  const auto closing = drift_delays(0, 1.0, 5, 7);
  EXPECT_GE(median(closing), 500) << "without looks the window waits for its close";
}

TEST(FastLooks, HalfSdShiftFoundWithinAFractionOfAWindow) {
  const auto fast = drift_delays(16, 0.5, 7, 11);
  EXPECT_LE(median(fast), 400);
}

// The looks' significance gate alone (effect gate opened: tiny thresholds, no noise floor; window
// closes at a negligible fdr) on same-population records: the looks spend look_records /
// arl_records each, so at most records / arl_records false alarms are expected (Bonferroni across
// looks and levels is conservative). Spending fdr per look instead would alarm in nearly every
// window.
TEST(FastLooks, FalseAlarmRateWithinTheConfiguredBudget) {
  EngineConfig c = window_config(16);
  auto& st = c.defaults;
  st.window_records = 1000;
  st.min_window_records = 1000;
  st.clear_windows = 1;
  st.sequential.arl_records = 3e4;
  st.drift.fdr = 1e-12;
  st.drift.wasserstein = 1e-6;
  st.drift.psi = 1e-6;
  st.drift.noise_z = 0;
  st.drift.max_floor_ratio = 1e6;
  Stream s(c, 99);
  s.feed(20000, 0, 0);  // the reference
  const int windows = 300;
  std::uint64_t opened = s.snapshot()->counters.findings_opened;
  int alarmed = 0;
  for (int w = 0; w < windows; ++w) {
    for (int b = 0; b < 1000 / 8; ++b) s.feed(8, 0, 0);
    const auto snap = s.snapshot();
    alarmed += static_cast<int>(snap->counters.findings_opened - opened);
    opened = snap->counters.findings_opened;
  }
  const double budget = windows * 1000.0 / st.sequential.arl_records;
  std::printf("%d false alarms in %d same-population records (budget %.0f)\n", alarmed, windows * 1000, budget);
  EXPECT_LE(alarmed, budget + 3 * std::sqrt(budget));
}

// The default configuration: nothing at all on same-population data over 200 windows.
TEST(FastLooks, NoFindingOnSamePopulationWithTheDefaults) {
  EngineConfig c = window_config(16);
  Stream s(c, 5);
  s.feed(20000, 0, 0);
  for (int w = 0; w < 200; ++w) s.feed(5000, 0, 0);
  const auto snap = s.snapshot();
  EXPECT_EQ(snap->counters.findings_opened, 0u);
}

}  // namespace
