// Sketch error bounds (KLL rank error, Misra-Gries count error), bin lookup exactness.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "agent/detectors/binning.hpp"
#include "agent/detectors/sketches.hpp"

using namespace mltap::detectors;

namespace {

double true_rank(const std::vector<double>& sorted, double x) {
  return static_cast<double>(std::upper_bound(sorted.begin(), sorted.end(), x) - sorted.begin()) / sorted.size();
}

double max_rank_error(const KllSketch& s, const std::vector<double>& sorted) {
  double worst = 0;
  for (int q = 1; q < 100; ++q) {
    const double x = sorted[q * sorted.size() / 100];
    worst = std::max(worst, std::fabs(s.rank(x) - true_rank(sorted, x)));
  }
  return worst;
}

std::vector<double> make_stream(int order, std::uint64_t seed, std::size_t n) {
  std::mt19937_64 g(seed);
  std::vector<double> v(n);
  if (order == 3) {
    std::lognormal_distribution<double> d(0, 2);
    for (auto& x : v) x = d(g);
  } else {
    std::uniform_real_distribution<double> u(0, 1);
    for (auto& x : v) x = u(g);
  }
  if (order == 1) std::sort(v.begin(), v.end());
  if (order == 2) std::sort(v.rbegin(), v.rend());
  return v;
}

}  // namespace

TEST(Kll, RankErrorWithinStatedBoundForEveryOrderAndSeed) {
  for (std::uint32_t k : {64u, 200u, 256u}) {
    for (int order = 0; order < 4; ++order) {
      for (int seed = 0; seed < 12; ++seed) {
        auto v = make_stream(order, 1000 + seed * 17 + order, 100000);
        KllSketch s(k, 77 + seed);
        for (double x : v) s.update(x);
        std::sort(v.begin(), v.end());
        EXPECT_LE(max_rank_error(s, v), kll_rank_error(k)) << "k=" << k << " order=" << order << " seed=" << seed;
        EXPECT_EQ(s.count(), v.size());
        EXPECT_EQ(s.min(), v.front());
        EXPECT_EQ(s.max(), v.back());
        EXPECT_EQ(s.quantile(0), v.front());
        EXPECT_EQ(s.quantile(1), v.back());
      }
    }
  }
}

TEST(Kll, MemoryIsBoundedWhateverTheLength) {
  KllSketch s(200);
  std::mt19937_64 g(1);
  std::normal_distribution<double> d;
  std::size_t most = 0;
  for (int i = 0; i < 2000000; ++i) {
    s.update(d(g));
    most = std::max(most, s.retained());
  }
  EXPECT_LE(most, 3u * 200u + 8u * 20u);
  EXPECT_LT(s.memory_bytes(), 16u * 1024u);
}

TEST(Kll, MergeKeepsTheBound) {
  auto v = make_stream(0, 5, 200000);
  KllSketch whole(200, 3);
  for (int part = 0; part < 10; ++part) {
    KllSketch s(200, 100 + part);
    for (std::size_t i = part * 20000; i < (part + 1) * 20000u; ++i) s.update(v[i]);
    whole.merge(s);
  }
  std::sort(v.begin(), v.end());
  EXPECT_EQ(whole.count(), v.size());
  EXPECT_LE(max_rank_error(whole, v), kll_rank_error(200));
}

TEST(Kll, IgnoresNonFinite) {
  KllSketch s(64);
  s.update(NAN);
  s.update(INFINITY);
  s.update(-INFINITY);
  EXPECT_EQ(s.count(), 0u);
  EXPECT_TRUE(std::isnan(s.quantile(0.5)));
  s.update(2.0);
  EXPECT_EQ(s.quantile(0.5), 2.0);
}

TEST(FrequentItems, CountsAreLowByAtMostTheStatedError) {
  std::mt19937_64 g(9);
  std::vector<double> weights;
  for (int i = 1; i <= 500; ++i) weights.push_back(1.0 / i);  // Zipf over 500 values
  std::discrete_distribution<int> d(weights.begin(), weights.end());
  FrequentItems fi(32);
  std::vector<std::uint64_t> truth(500, 0);
  const std::uint64_t n = 200000;
  for (std::uint64_t i = 0; i < n; ++i) {
    const int v = d(g);
    ++truth[v];
    fi.update(v);
  }
  EXPECT_FALSE(fi.exact());
  EXPECT_LE(fi.max_error(), n / 33 + 1);
  for (int v = 0; v < 500; ++v) {
    const auto est = fi.estimate(v);
    EXPECT_LE(est, truth[v]) << v;
    EXPECT_LE(truth[v] - est, fi.max_error()) << v;
  }
  EXPECT_EQ(fi.items().front().value, 0.0);  // the most frequent value survives
}

TEST(FrequentItems, ExactBelowCapacityAndMergeable) {
  FrequentItems a(8), b(8);
  for (int i = 0; i < 100; ++i) a.update(i % 5);
  EXPECT_TRUE(a.exact());
  EXPECT_EQ(a.estimate(3), 20u);
  std::mt19937_64 g(4);
  std::uniform_int_distribution<int> u(0, 40);
  std::vector<std::uint64_t> truth(41, 0);
  FrequentItems x(8), y(8);
  for (int i = 0; i < 50000; ++i) {
    const int v = i % 3 == 0 ? 7 : u(g);
    ++truth[v];
    (i % 2 ? x : y).update(v);
  }
  x.merge(y);
  EXPECT_EQ(x.total(), 50000u);
  EXPECT_LE(x.max_error(), 50000u / 9 + 1);
  for (int v = 0; v <= 40; ++v) {
    EXPECT_LE(x.estimate(v), truth[v]);
    EXPECT_LE(truth[v] - x.estimate(v), x.max_error());
  }
  EXPECT_EQ(x.items().front().value, 7.0);
}

TEST(BinLookup, MatchesBinarySearchOnHostileEdges) {
  std::mt19937_64 g(11);
  for (int trial = 0; trial < 30; ++trial) {
    std::vector<double> e;
    std::lognormal_distribution<double> heavy(0, 3);
    const int n = 2 + static_cast<int>(g() % 300);
    for (int i = 0; i < n; ++i) e.push_back(trial % 2 ? heavy(g) : static_cast<double>(g() % 1000) / 7.0);
    std::sort(e.begin(), e.end());
    e.erase(std::unique(e.begin(), e.end()), e.end());
    if (e.size() < 2) continue;
    BinLookup b(e);
    std::uniform_real_distribution<double> u(e.front() - 1, e.back() + 1);
    std::vector<double> probes = e;
    for (int i = 0; i < 20000; ++i) probes.push_back(u(g));
    for (double x : e) {
      probes.push_back(std::nextafter(x, -INFINITY));
      probes.push_back(std::nextafter(x, INFINITY));
    }
    for (double x : probes) {
      std::uint32_t want;
      if (x < e.front()) want = 0;
      else if (x > e.back()) want = static_cast<std::uint32_t>(e.size());
      else want = std::min<std::uint32_t>(static_cast<std::uint32_t>(std::upper_bound(e.begin(), e.end(), x) - e.begin()),
                                          static_cast<std::uint32_t>(e.size() - 1));
      ASSERT_EQ(b.slot(x), want) << "x=" << x << " trial=" << trial;
    }
  }
}

TEST(BinLookup, ConstantReference) {
  const double e[] = {3.0, 3.0};
  BinLookup b(e);
  EXPECT_EQ(b.slot(2.9), 0u);
  EXPECT_EQ(b.slot(3.0), 1u);
  EXPECT_EQ(b.slot(3.1), 2u);
}

TEST(BinLookup, RangeWiderThanTheLargestDouble) {
  const double e[] = {-1e308, -1.0, 0.0, 1.0, 1e308};
  BinLookup b(e);
  EXPECT_EQ(b.slot(-1e308), 1u);
  EXPECT_EQ(b.slot(-5.0), 1u);
  EXPECT_EQ(b.slot(-0.5), 2u);
  EXPECT_EQ(b.slot(0.5), 3u);
  EXPECT_EQ(b.slot(1e308), 4u);
  EXPECT_EQ(b.slot(-INFINITY), 0u);
}
