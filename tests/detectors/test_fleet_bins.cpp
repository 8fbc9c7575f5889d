// Fleet bins (agent/detectors/fleet_bins.hpp, docs/metrics.md "Fleet"): derived from the profile
// file alone (same file, same bins and edges_id on every host), about equal reference shares,
// counted exactly (the training data itself reproduces the reference's counts per bin), open
// windows included, only for file references, off with fleet_bins: 0; and their Prometheus
// families with a bounded number of series per feature.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>
#include <set>

#include <prometheus/metric_family.h>

#include "agent/detectors/config.hpp"
#include "agent/detectors/engine.hpp"
#include "core/config_reader.hpp"
#include "agent/detectors/fleet_bins.hpp"
#include "exporters/metrics/detector_metrics.hpp"

using namespace mltap;
using namespace mltap::detectors;
namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t kSec = 1000000000ULL;
constexpr std::uint64_t kChunk = 64;  // rows staged before they reach the window (engine_state.hpp)

fs::path tmpdir() {
  auto p = fs::temp_directory_path() / ("mltap-fleet-" + std::to_string(::getpid()));
  fs::create_directories(p);
  return p;
}

// Training data: a skewed numeric column and a categorical one (codes 0..14, geometric-ish).
std::vector<double> training(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::lognormal_distribution<double> amount(0.0, 1.0);
  std::geometric_distribution<int> code(0.25);
  std::vector<double> rows(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    rows[i * 2] = amount(g);
    rows[i * 2 + 1] = std::min(code(g), 14);
  }
  return rows;
}

ReferenceProfile profile_of(const std::vector<double>& rows) {
  ProfileOptions o;
  o.categorical = {"code"};
  return build_profile(rows, 2, {"amount", "code"}, o);
}

void feed(DetectorEngine& e, const std::string& stream, const std::vector<double>& rows, bool flush = true) {
  core::StreamInfo info;
  info.name = stream;
  info.component = "test";
  info.kind = format::StreamKind::features;
  info.feature_names = {"amount", "code"};
  std::uint64_t now = 1700000000 * kSec;
  const std::vector<std::uint32_t> shape{2};
  for (std::size_t done = 0; done < rows.size() / 2;) {
    const std::size_t n = std::min<std::size_t>(100, rows.size() / 2 - done);
    core::DecodedBatch b;
    b.stream = &info;
    b.timestamp_ns = now;
    b.dtype = format::DType::float64;
    b.row_shape = shape;
    b.rows = n;
    b.cols = 2;
    b.values = std::span<const double>(rows.data() + done * 2, n * 2);
    e.on_batch(b);
    now += kSec / 10;
    e.on_tick(now);
    done += n;
  }
  if (flush) {
    e.flush(now);  // closes the open window: its values stay counted in the fleet bins
  } else {
    e.publish_now();
  }
}

EngineConfig config_with(const std::string& path, std::uint32_t fleet_bins) {
  EngineConfig c;
  c.defaults.window_records = 2000;
  c.defaults.min_window_records = 500;
  c.defaults.window_time = std::chrono::nanoseconds(0);
  c.defaults.throughput.enabled = false;
  c.defaults.staleness.enabled = false;
  auto st = c.defaults;
  st.reference = path;
  st.fleet_bins = fleet_bins;
  c.streams.emplace_back("fleet", st);
  return c;
}

}  // namespace

TEST(FleetBins, NumericBinsHoldAboutEqualReferenceSharesAndAreIdenticalForTheSameFile) {
  const auto rows = training(50000, 1);
  const auto p = profile_of(rows);
  const auto dir = tmpdir();
  save_profile(p, (dir / "a.profile").string());
  const auto loaded = load_profile((dir / "a.profile").string());
  const auto& f = p.features[0];
  const auto m = compile_fleet_numeric(f, compile_numeric(f, 16, p.rank_error), 10);
  ASSERT_EQ(m.reference_share.size(), 10u);
  for (double s : m.reference_share) {
    EXPECT_GT(s, 0.09);
    EXPECT_LT(s, 0.11);
  }
  for (std::size_t i = 1; i < m.bin_of.size(); ++i) EXPECT_GE(m.bin_of[i], m.bin_of[i - 1]);
  const auto& lf = loaded.features[0];
  EXPECT_EQ(compile_fleet_numeric(lf, compile_numeric(lf, 16, loaded.rank_error), 10).edges_id, m.edges_id);
  // Another host that pinned its own data has other edges: another edges_id.
  const auto other = profile_of(training(50000, 2));
  const auto& of = other.features[0];
  EXPECT_NE(compile_fleet_numeric(of, compile_numeric(of, 16, other.rank_error), 10).edges_id, m.edges_id);
  // Categorical: the 9 most frequent codes own a bin, the rest share the last one.
  const auto c = compile_fleet_categorical(compile_categorical(p.features[1]), 10);
  EXPECT_EQ(c.reference_share.size(), 10u);
  EXPECT_GT(c.reference_share[0], c.reference_share[8]);
}

TEST(FleetBins, TrainingDataReproducesTheReferenceCountsOnTwoHostsAndExportsTwentySeriesPerFeature) {
  const auto rows = training(6000, 3);
  const auto dir = tmpdir();
  save_profile(profile_of(rows), (dir / "b.profile").string());
  DetectorEngine h1(config_with((dir / "b.profile").string(), 10));
  DetectorEngine h2(config_with((dir / "b.profile").string(), 10));
  feed(h1, "fleet", rows);
  // Host 2 sees only 320 rows: fewer than min_window_records, its window stays open and its
  // values are counted all the same (but for the rows still staged, less than one chunk).
  feed(h2, "fleet", std::vector<double>(rows.begin(), rows.begin() + 640), false);
  const auto s1 = h1.snapshot(), s2 = h2.snapshot();
  ASSERT_EQ(s1->streams.size(), 1u);
  ASSERT_TRUE(s1->streams[0]->fleet);
  ASSERT_TRUE(s2->streams[0]->fleet);
  EXPECT_EQ(s2->streams[0]->windows_closed, 0u);
  const auto& f1 = *s1->streams[0]->fleet;
  const auto& f2 = *s2->streams[0]->fleet;
  ASSERT_EQ(f1.size(), 2u);
  for (std::size_t i = 0; i < f1.size(); ++i) {
    EXPECT_EQ(f1[i].edges_id, f2[i].edges_id);
    EXPECT_EQ(f1[i].reference_share, f2[i].reference_share);
    const double k = static_cast<double>(f1[i].counts.size());
    std::uint64_t n = 0, n2 = 0;
    for (auto c : f1[i].counts) n += c;
    for (auto c : f2[i].counts) n2 += c;
    EXPECT_EQ(n, 6000u) << f1[i].feature;
    EXPECT_LE(n2, 320u) << f2[i].feature;
    EXPECT_GT(n2 + kChunk, 320u) << f2[i].feature;
    // The reference was built from these very rows: the same counts per bin, exactly.
    for (std::size_t b = 0; b < f1[i].counts.size(); ++b) {
      EXPECT_DOUBLE_EQ((static_cast<double>(f1[i].counts[b]) + 0.5) / (6000 + 0.5 * k), f1[i].reference_share[b])
          << f1[i].feature << " bin " << b;
    }
  }
  metrics::DetectorCollector col([&] { return s1; });
  std::map<std::string, std::set<std::string>> bins;
  std::size_t values = 0, shares = 0;
  for (const auto& fam : col.Collect()) {
    for (const auto& m : fam.metric) {
      std::map<std::string, std::string> l;
      for (const auto& p : m.label) l[p.name] = p.value;
      if (fam.name == "mltap_fleet_bin_values_total") {
        ++values;
        EXPECT_EQ(l.size(), 4u);
        EXPECT_FALSE(l["edges_id"].empty());
        bins[l["feature"]].insert(l["bin"]);
      }
      if (fam.name == "mltap_fleet_reference_share") ++shares;
    }
  }
  EXPECT_EQ(values, 20u);  // 10 per feature
  EXPECT_EQ(shares, 20u);
  EXPECT_EQ(bins["amount"].size(), 10u);
  EXPECT_EQ(bins["code"].size(), 10u);
}

TEST(FleetBins, PinnedReferencesAndFleetBinsZeroExportNothing) {
  const auto rows = training(6000, 4);
  const auto dir = tmpdir();
  save_profile(profile_of(rows), (dir / "c.profile").string());
  DetectorEngine off(config_with((dir / "c.profile").string(), 0));
  feed(off, "fleet", rows);
  EXPECT_FALSE(off.snapshot()->streams[0]->fleet);
  DetectorEngine pinned(config_with((dir / "c.profile").string(), 10));
  feed(pinned, "other", rows);  // no file for "other": pinned from its first records
  const auto s = pinned.snapshot();
  ASSERT_EQ(s->streams.size(), 1u);
  EXPECT_NE(s->streams[0]->reference, core::ReferenceSource::file);
  EXPECT_FALSE(s->streams[0]->fleet);
}

TEST(FleetBins, ConfigKeyPerStreamWithDefaultTenAndOneRefused) {
  auto parse = [](const std::string& yaml) {
    auto root = core::load_text(yaml, "cfg.yaml");
    core::ConfigSection top(root, "cfg.yaml", "");
    auto sec = top.child("detectors");
    return parse_engine_config(sec);
  };
  const auto c = parse("detectors:\n  fleet_bins: 16\n  streams:\n    quiet: {fleet_bins: 0}\n");
  EXPECT_EQ(parse("other: 1\n").defaults.fleet_bins, 10u);
  EXPECT_EQ(c.settings_for("any").fleet_bins, 16u);
  EXPECT_EQ(c.settings_for("quiet").fleet_bins, 0u);
  for (const char* bad : {"detectors:\n  fleet_bins: 1\n", "detectors:\n  fleet_bins: 33\n"}) {
    try {
      parse(bad);
      ADD_FAILURE() << "accepted: " << bad;
    } catch (const core::ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("fleet_bins"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("cfg.yaml:2:"), std::string::npos) << e.what();
    }
  }
}
