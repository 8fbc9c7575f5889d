// Distances, p-values, Benjamini-Hochberg, CUSUM/Page-Hinkley calibration, and the binned
// statistics against exact two-sample computations within their stated error bounds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "agent/detectors/binning.hpp"
#include "agent/detectors/noise.hpp"
#include "agent/detectors/profile.hpp"
#include "agent/detectors/stats.hpp"

using namespace mltap::detectors;

TEST(Distances, KnownValues) {
  const std::vector<double> p{0.5, 0.5}, q{0.9, 0.1}, a{1, 0}, b{0, 1};
  EXPECT_NEAR(psi(p, q), 0.4 * std::log(1.8) + 0.4 * std::log(5.0), 1e-12);
  EXPECT_DOUBLE_EQ(psi(p, p), 0);
  EXPECT_NEAR(js_distance(a, b), 1.0, 1e-12);
  EXPECT_NEAR(js_distance(p, p), 0.0, 1e-12);
  EXPECT_NEAR(hellinger(a, b), 1.0, 1e-12);
  EXPECT_NEAR(hellinger(p, q), std::sqrt(1 - (std::sqrt(0.45) + std::sqrt(0.05))), 1e-12);
  EXPECT_NEAR(linf(p, q), 0.4, 1e-12);
  // JS distance (base 2) of (0.5, 0.5) vs (0.9, 0.1), from the definition with m = (0.7, 0.3).
  const double d = 0.5 * (0.5 * std::log2(0.5 / 0.7) + 0.5 * std::log2(0.5 / 0.3)) +
                   0.5 * (0.9 * std::log2(0.9 / 0.7) + 0.1 * std::log2(0.1 / 0.3));
  EXPECT_NEAR(js_distance(p, q), std::sqrt(d), 1e-12);
  const auto s = smoothed_probabilities(std::vector<double>{0, 10}, 0.5);
  EXPECT_NEAR(s[0], 0.5 / 11, 1e-12);
}

TEST(PValues, ChiSquaredAndKolmogorovTables) {
  EXPECT_NEAR(chi2_sf(3.841458820694124, 1), 0.05, 1e-6);
  EXPECT_NEAR(chi2_sf(18.307038053275146, 10), 0.05, 1e-6);
  EXPECT_NEAR(chi2_sf(124.34211340400407, 100), 0.05, 1e-6);
  EXPECT_NEAR(chi2_sf(0.0039321400000195, 1), 0.95, 1e-6);
  EXPECT_DOUBLE_EQ(chi2_sf(0, 3), 1.0);
  // Kolmogorov: P(sqrt(n) D > 1.3581) = 0.05 for large n.
  const double n = 1e6;
  EXPECT_NEAR(ks_p_value(1.3581 / std::sqrt(n / 2), n, n), 0.05, 2e-3);
  EXPECT_NEAR(ks_p_value(1.6276 / std::sqrt(n / 2), n, n), 0.01, 1e-3);
  EXPECT_DOUBLE_EQ(ks_p_value(0, 100, 100), 1.0);
}

TEST(ChiSquared, MatchesHandComputedTable) {
  // 2x3 table [[10, 20, 30], [20, 20, 20]] (scipy: statistic 5.333.., dof 2, p 0.0694..).
  const std::vector<double> r{10, 20, 30}, c{20, 20, 20};
  const auto x = chi_squared_2xk(r, c);
  EXPECT_NEAR(x.statistic, 5.333333333333333, 1e-9);
  EXPECT_EQ(x.dof, 2);
  EXPECT_NEAR(x.p_value, 0.06948345122280154, 1e-9);
  EXPECT_TRUE(x.valid);
  // dof 1 uses Yates' correction: [[10, 20], [20, 10]] -> 5.4 (uncorrected 6.667).
  const auto y = chi_squared_2xk(std::vector<double>{10, 20}, std::vector<double>{20, 10});
  EXPECT_NEAR(y.statistic, 5.4, 1e-9);
}

TEST(BenjaminiHochberg, StepUpRule) {
  const std::vector<double> p{0.01, 0.02, 0.03, 0.04, 0.05};
  for (bool r : benjamini_hochberg(p, 0.05)) EXPECT_TRUE(r);
  const std::vector<double> p2{0.001, 0.04, 0.5, NAN};
  const auto r2 = benjamini_hochberg(p2, 0.05);
  EXPECT_TRUE(r2[0]);
  EXPECT_FALSE(r2[1]);
  EXPECT_FALSE(r2[2]);
  EXPECT_FALSE(r2[3]);
  // Step-up: 0.04 passes at rank 4 of 4 (0.04 <= 0.05) and takes 0.03 with it, although 0.03
  // fails its own rank (0.03 > 2/4 * 0.05).
  const std::vector<double> p3{0.04, 0.03, 0.035, 0.01};
  for (bool r : benjamini_hochberg(p3, 0.05)) EXPECT_TRUE(r);
  const std::vector<double> p4{0.04, 0.03, 0.035, 0.9};
  for (bool r : benjamini_hochberg(p4, 0.05)) EXPECT_FALSE(r);
}

TEST(Sequential, CusumRunLengthMatchesTheCalibration) {
  for (double target : {200.0, 1000.0}) {
    const double k = 0.5, h = cusum_threshold(target, k);
    std::mt19937_64 g(42 + static_cast<int>(target));
    std::normal_distribution<double> z;
    double total = 0;
    const int runs = 1500;
    for (int r = 0; r < runs; ++r) {
      Cusum c(k, h);
      std::uint64_t t = 0;
      while (!c.update(z(g))) ++t;
      total += static_cast<double>(t + 1);
    }
    const double arl = total / runs;
    EXPECT_GT(arl, 0.8 * target) << "h=" << h;
    EXPECT_LT(arl, 1.25 * target) << "h=" << h;
  }
}

// The exponential tilt is 2k for N(0,1) and smaller for a right-skewed distribution's upper side,
// and the tilted threshold keeps the run length of a skewed stream near its target, where the
// Gaussian threshold would alarm several times too often.
TEST(Sequential, TiltedThresholdCalibratesSkewedData) {
  // N(0,1) and standardized Exp(1) (mean 1, sd 1) at 4,000 quantile midpoints.
  std::vector<double> normal, expo, w(4000, 1.0 / 4000);
  for (int i = 0; i < 4000; ++i) {
    const double p = (i + 0.5) / 4000;
    expo.push_back(-std::log(1 - p) - 1);
    double lo = -10, hi = 10;  // the normal quantile by bisection (no inverse in <cmath>)
    for (int it = 0; it < 100; ++it) {
      const double mid = 0.5 * (lo + hi);
      (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
    }
    normal.push_back(0.5 * (lo + hi));
  }
  for (double k : {0.125, 0.25, 0.5}) {
    EXPECT_NEAR(cusum_tilt(normal, w, k), 2 * k, 0.01 * k) << k;
    EXPECT_LT(cusum_tilt(expo, w, k), 1.8 * k) << k;
    // A Gaussian tilt gives Siegmund's ARL.
    EXPECT_NEAR(cusum_arl_one_sided_tilted(2 * k, k, 7) / cusum_arl_one_sided(k, 7), 1, 1e-12);
  }
  // Bounded above by k: the chart never rises; the fallback is the Gaussian tilt.
  const std::vector<double> flat{-0.1, 0.1}, half{0.5, 0.5};
  EXPECT_EQ(cusum_tilt(flat, half, 0.5), 1.0);

  const double k = 0.5, target = 2000;
  const double h = cusum_threshold_tilted(target, cusum_tilt(expo, w, k), k);
  const double h_gauss = cusum_threshold(target / 2, k);  // one side: half of a two-sided target
  EXPECT_GT(h, 1.2 * h_gauss);
  std::mt19937_64 g(5);
  std::exponential_distribution<double> e;
  auto run_length = [&](double thr) {
    double total = 0;
    const int runs = 400;
    for (int r = 0; r < runs; ++r) {
      double s = 0;
      std::uint64_t t = 0;
      do {
        s = std::max(0.0, s + e(g) - 1 - k);
        ++t;
      } while (s <= thr);
      total += static_cast<double>(t);
    }
    return total / runs;
  };
  const double arl = run_length(h);
  EXPECT_GT(arl, 0.7 * target) << "h=" << h;
  EXPECT_LT(arl, 1.5 * target) << "h=" << h;
  EXPECT_LT(run_length(h_gauss), 0.5 * target) << "the Gaussian threshold is too low for skewed data";
}

TEST(Sequential, PageHinkleyIsConservativeAndBothDetectShifts) {
  const double target = 500, k = 0.5, h = cusum_threshold(target, k);
  std::mt19937_64 g(7);
  std::normal_distribution<double> z;
  double total = 0;
  for (int r = 0; r < 600; ++r) {
    PageHinkley ph(k, h);
    std::uint64_t t = 0;
    while (!ph.update(z(g)) && t < 100000) ++t;
    total += static_cast<double>(t + 1);
  }
  EXPECT_GT(total / 600, 0.8 * target);
  // A shift of 2 standard errors is found within a few dozen blocks by both.
  Cusum c(k, h);
  PageHinkley ph(k, h);
  for (int i = 0; i < 50; ++i) {
    ph.update(z(g));
    c.update(z(g));
  }
  int tc = -1, tp = -1;
  for (int i = 0; i < 200; ++i) {
    if (tc < 0 && c.update(2 + z(g))) tc = i;
    if (tp < 0 && ph.update(2 + z(g))) tp = i;
  }
  EXPECT_GE(tc, 0);
  EXPECT_LT(tc, 20);
  EXPECT_GE(tp, 0);
  EXPECT_LT(tp, 40);
}

namespace {

// Exact two-sample KS and W1 from the raw samples (merge of sorted arrays).
struct Exact {
  double ks = 0, w1 = 0;
};
Exact exact_two_sample(std::vector<double> a, std::vector<double> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  std::vector<double> all(a);
  all.insert(all.end(), b.begin(), b.end());
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  Exact e;
  for (std::size_t i = 0; i < all.size(); ++i) {
    const double fa = static_cast<double>(std::upper_bound(a.begin(), a.end(), all[i]) - a.begin()) / a.size();
    const double fb = static_cast<double>(std::upper_bound(b.begin(), b.end(), all[i]) - b.begin()) / b.size();
    e.ks = std::max(e.ks, std::fabs(fa - fb));
    if (i + 1 < all.size()) e.w1 += std::fabs(fa - fb) * (all[i + 1] - all[i]);
  }
  return e;
}

}  // namespace

TEST(BinnedStatistics, KsAndWassersteinWithinStatedBounds) {
  std::mt19937_64 g(3);
  struct Case {
    const char* name;
    std::function<double()> ref, cur;
  };
  std::normal_distribution<double> n01;
  std::lognormal_distribution<double> ln(0, 1);
  std::uniform_int_distribution<int> die(0, 9);
  std::vector<Case> cases = {
      {"identical normal", [&] { return n01(g); }, [&] { return n01(g); }},
      {"shifted normal", [&] { return n01(g); }, [&] { return 0.3 + n01(g); }},
      {"wider normal", [&] { return n01(g); }, [&] { return 1.5 * n01(g); }},
      {"lognormal out of range", [&] { return ln(g); }, [&] { return 2 * ln(g); }},
      {"discrete atoms", [&] { return static_cast<double>(die(g)); }, [&] { return static_cast<double>(die(g) % 7); }},
  };
  for (const auto& c : cases) {
    std::vector<double> ref(20000), cur(5000);
    for (auto& x : ref) x = c.ref();
    for (auto& x : cur) x = c.cur();
    ProfileOptions o;
    o.categorical_max_distinct = 0;  // keep the discrete case numeric
    const auto p = build_profile(ref, 1, {"x"}, o);
    const auto nr = compile_numeric(p.features[0], 16, 0);
    NumericWindow w;
    w.reset(nr.lookup.bins());
    add_numeric(nr, w, cur.data(), cur.size(), 1);
    const auto s = compare_numeric(nr, w, 1e9);
    const auto ex = exact_two_sample(ref, cur);
    EXPECT_LE(s.ks, ex.ks + 1e-12) << c.name;
    EXPECT_LE(ex.ks, s.ks + s.ks_bound + 1e-12) << c.name;
    EXPECT_LE(std::fabs(s.wasserstein * nr.sd - ex.w1), s.wasserstein_bound * nr.sd + 1e-9) << c.name;
    EXPECT_GE(s.ks_p_value, 0.0);
  }
}

// The engine's inline noise table (floats) gives the moments of the estimate it was made from, to
// float precision, at and between the estimated window sizes; a longer list of window sizes keeps
// its first and last exactly.
TEST(NoiseTable, GivesTheEstimatesMoments) {
  NoiseEstimate e;
  e.windows = {1000, 5000, 50000, 1000000};
  e.methods.push_back({"wasserstein", {0.05, 0.03, 0.021, 0.02}, {0.011, 0.007, 0.0051, 0.005}});
  e.methods.push_back({"psi", {0.09, 0.05, 0.04, 0.039}, {0.02, 0.012, 0.01, 0.0098}});
  const NoiseTable t(e);
  ASSERT_FALSE(t.empty());
  for (const char* m : {"wasserstein", "psi"}) {
    for (double n : {100.0, 1000.0, 2500.0, 5000.0, 20000.0, 1e6, 1e8}) {
      NoiseMoments a, b;
      ASSERT_TRUE(noise_moments(e, m, 2000, n, a));
      ASSERT_TRUE(t.moments(m, 2000, n, b)) << m;
      EXPECT_NEAR(b.mean, a.mean, 1e-6 * a.mean) << m << " n=" << n;
      EXPECT_NEAR(b.sd, a.sd, 1e-6 * a.sd) << m << " n=" << n;
    }
  }
  NoiseMoments x;
  EXPECT_FALSE(t.moments("ks", 2000, 5000, x)) << "not estimated";
  EXPECT_FALSE(NoiseTable().moments("psi", 2000, 5000, x));

  NoiseEstimate longer;
  longer.windows = {100, 1000, 5000, 20000, 50000, 1000000};
  longer.methods.push_back({"linf", {0.2, 0.1, 0.06, 0.05, 0.045, 0.04}, {0.05, 0.02, 0.01, 0.008, 0.007, 0.006}});
  const NoiseTable lt(longer);
  for (double n : {100.0, 1000000.0}) {
    NoiseMoments a, b;
    ASSERT_TRUE(noise_moments(longer, "linf", 500, n, a));
    ASSERT_TRUE(lt.moments("linf", 500, n, b));
    EXPECT_NEAR(b.mean, a.mean, 1e-6 * a.mean) << n;
    EXPECT_NEAR(b.sd, a.sd, 1e-6 * a.sd) << n;
  }
}
