// Small references (docs/detectors.md, "Noise floor and minimum detectable effect"), through the
// engine directly with the default configuration:
//  - false alarms: references of 100, 500, 2,000 and 20,000 rows drawn from the same population
//    as 10^6 current rows (200 windows) raise no finding of any kind, CUSUM's included;
//  - power: a 0.25 sd mean shift is found with a 500-row reference and 5,000-record windows;
//  - a reference too small for the shift says so in words instead of a silent "no".
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "agent/detectors/engine.hpp"
#include "agent/detectors/profile.hpp"

using namespace mltap;
using namespace mltap::detectors;
using namespace mltap::core;

namespace {

constexpr std::size_t kCols = 7;
const std::vector<std::string> kNames{"x0", "x1", "x2", "lognormal", "binary", "int17", "likert"};

// One population: three normals, a lognormal, a standardized binary column (two float values),
// a 17-valued integer and a 5-level float scale. `shift` moves x0 by that many sd.
std::vector<double> population(std::size_t n, std::uint64_t seed, double shift = 0) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> z;
  std::uniform_real_distribution<double> u;
  std::binomial_distribution<int> bin(16, 0.4);
  std::vector<double> v(n * kCols);
  const double p = 0.3, sd = std::sqrt(p * (1 - p));
  for (std::size_t r = 0; r < n; ++r) {
    double* row = v.data() + r * kCols;
    row[0] = z(g) + shift;
    row[1] = z(g);
    row[2] = 3 + 2 * z(g);
    row[3] = std::exp(z(g));
    row[4] = ((u(g) < p ? 1.0 : 0.0) - p) / sd;
    row[5] = bin(g);
    const double l = u(g);
    row[6] = l < 0.1 ? -1.0 : l < 0.3 ? -0.5 : l < 0.6 ? 0.0 : l < 0.85 ? 0.5 : 1.0;
  }
  return v;
}

struct Outcome {
  std::shared_ptr<const DetectorSnapshot> snap;
  std::size_t findings = 0;  // open and closed, any kind
  std::size_t drift = 0;
  std::size_t sequential = 0;
};

// Feeds `cur` (batches of up to 4,096 rows, ~10,000 records/s) to one stream whose reference is
// `ref`, with windows of `window` records, and counts every finding (open and closed).
Outcome run(const ReferenceProfile& ref, const std::vector<double>& cur, std::uint64_t window = 5000) {
  EngineConfig cfg;
  cfg.defaults.window_records = window;
  cfg.defaults.window_time = std::chrono::nanoseconds(0);
  DetectorEngine engine(cfg);
  engine.set_reference("s", std::make_shared<const ReferenceProfile>(ref), "ref.profile");
  StreamInfo info;
  info.name = "s";
  info.component = "test";
  info.feature_names = kNames;
  DecodedBatch b;
  b.stream = &info;
  b.dtype = format::DType::float64;
  const std::uint32_t shape[1] = {kCols};
  b.row_shape = shape;
  b.cols = kCols;
  std::uint64_t now = 1700000000ULL * 1000000000ULL;
  const std::size_t rows = cur.size() / kCols;
  for (std::size_t r = 0; r < rows; r += 4096) {
    b.rows = std::min<std::size_t>(4096, rows - r);
    b.values = std::span<const double>(cur.data() + r * kCols, b.rows * kCols);
    b.timestamp_ns = now;
    b.seq = r / 4096;
    engine.on_batch(b);
    now += 400000000ULL;  // ~10,000 records/s
  }
  engine.flush(now);
  Outcome out;
  out.snap = engine.snapshot();
  for (const auto* list : {&out.snap->open_findings, &out.snap->closed_findings}) {
    for (const auto& f : *list) {
      ++out.findings;
      out.drift += f.kind == FindingKind::drift;
      out.sequential += f.kind == FindingKind::sequential_change;
    }
  }
  return out;
}

// The findings of a run that must not be there, one failure each.
void expect_no_findings(const Outcome& r) {
  for (const auto* list : {&r.snap->open_findings, &r.snap->closed_findings}) {
    for (const auto& f : *list) {
      ADD_FAILURE() << "finding " << finding_kind_name(f.kind) << "/" << f.reason << ": " << f.summary;
    }
  }
}

const FeatureResult& feature(const Outcome& r, const std::string& name) {
  for (const auto& f : *r.snap->streams.at(0)->features) {
    if (f.name == name) return f;
  }
  throw std::runtime_error("no feature " + name);
}

}  // namespace

TEST(SmallReferences, SamePopulationNeverDriftsFromOneHundredRowsUp) {
  const auto current = population(1000000, 7);
  double last_mde = INFINITY;
  for (std::size_t n : {100u, 500u, 2000u, 20000u}) {
    SCOPED_TRACE("reference of " + std::to_string(n) + " rows");
    const auto ref = build_profile(population(n, 100 + n), kCols, kNames, ProfileOptions{});
    EXPECT_EQ(ref.features[4].kind, FeatureKind::categorical);  // two float values
    EXPECT_EQ(ref.features[6].kind, FeatureKind::categorical);  // five float values
    EXPECT_EQ(ref.features[0].kind, FeatureKind::numeric);
    const Outcome r = run(ref, current);
    expect_no_findings(r);  // sequential_change included: CUSUM allows for the reference's error
    std::printf("reference %zu rows: %zu findings, %zu sequential_change; x0 decides W1/sd >= %.3f\n", n,
                r.findings, r.sequential, feature(r, "x0").min_detectable);
    EXPECT_EQ(r.snap->streams.at(0)->windows_closed, 200u);
    // The minimum detectable W1/sd falls as the reference grows, never below the threshold.
    const auto& x0 = feature(r, "x0");
    EXPECT_EQ(x0.min_detectable_method, "wasserstein");
    EXPECT_GE(x0.min_detectable, 0.1);
    EXPECT_LE(x0.min_detectable, last_mde);
    last_mde = x0.min_detectable;
    if (n == 100) {
      EXPECT_FALSE(core::power_note(x0).empty());
    }
    if (n == 20000) {
      EXPECT_TRUE(core::power_note(x0).empty()) << core::power_note(x0);
    }
  }
}

TEST(SmallReferences, QuarterSdShiftFoundWithFiveHundredRowsAndWindowsOfFiveThousand) {
  int found = 0;
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    const auto ref = build_profile(population(500, 1000 + seed), kCols, kNames, ProfileOptions{});
    SCOPED_TRACE("seed " + std::to_string(seed));
    const Outcome r = run(ref, population(5000, 2000 + seed, 0.25));  // one window of 5,000 records
    const auto& x0 = feature(r, "x0");
    EXPECT_LT(x0.min_detectable, 0.25) << "the tool says it cannot see 0.25 sd";
    found += x0.drifted;
    for (const auto& name : {"x1", "x2", "lognormal", "binary", "int17", "likert"}) {
      EXPECT_FALSE(feature(r, name).drifted) << name;
    }
  }
  EXPECT_GE(found, 4) << "a 0.25 sd shift found in " << found << " of 5 runs";
}

TEST(SmallReferences, TooSmallReferenceSaysSoInWords) {
  // The case: 178 reference rows, 0.25 sd shift, 50,000 current rows.
  const auto ref = build_profile(population(178, 17), kCols, kNames, ProfileOptions{});
  const auto cur = population(50000, 18, 0.25);
  Outcome r = run(ref, cur, 50000);
  const auto& x0 = feature(r, "x0");
  // Either it is found, or the result says why not: the level it decides at is above the shift.
  if (!x0.drifted) {
    EXPECT_GT(x0.min_detectable, 0.2);
    EXPECT_NE(core::power_note(x0).find("reference of 178 values"), std::string::npos) << core::power_note(x0);
    EXPECT_NE(core::power_note(x0).find("decides only above"), std::string::npos) << core::power_note(x0);
  }
  // A reference of 12 rows cannot decide anything numeric: no drift, and words saying so.
  const auto tiny = build_profile(population(12, 19), kCols, kNames, ProfileOptions{});
  r = run(tiny, cur, 50000);
  const auto& t0 = feature(r, "x1");
  EXPECT_FALSE(t0.drifted);
  EXPECT_NE(core::power_note(t0).find("too small to decide"), std::string::npos) << core::power_note(t0);
}
