#include "agent/detectors/noise.hpp"

#include <algorithm>
#include <cmath>
#include <exception>
#include <numeric>
#include <system_error>
#include <thread>

#include "agent/detectors/binning.hpp"

namespace mltap::detectors {
namespace {

// xoshiro256+ seeded by splitmix64: fast, and the estimate is reproducible from the seed.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) noexcept {
    for (auto& x : s_) {
      std::uint64_t z = (seed += 0x9E3779B97F4A7C15ULL);
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
      x = z ^ (z >> 31);
    }
  }
  double uniform() noexcept {  // (0, 1)
    const std::uint64_t r = s_[0] + s_[3];
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = (s_[3] << 45) | (s_[3] >> 19);
    return (static_cast<double>(r >> 11) + 0.5) * 0x1.0p-53;
  }
  double normal() noexcept {
    if (have_) {
      have_ = false;
      return spare_;
    }
    const double u = uniform(), v = uniform();
    const double r = std::sqrt(-2 * std::log(u));
    spare_ = r * std::sin(6.283185307179586 * v);
    have_ = true;
    return r * std::cos(6.283185307179586 * v);
  }
  // Poisson(lambda): exact by inversion below 12, normal approximation above (skewness < 0.29;
  // the scores sum over many bins, which averages it out).
  // `limit` is exp(-lambda), computed once per bin by the caller.
  std::uint64_t poisson(double lambda, double limit) noexcept {
    if (!(lambda > 0)) return 0;
    if (lambda < 12) {
      double prod = uniform();
      std::uint64_t k = 0;
      while (prod > limit) {
        prod *= uniform();
        ++k;
      }
      return k;
    }
    const double x = std::round(lambda + std::sqrt(lambda) * normal());
    return x > 0 ? static_cast<std::uint64_t>(x) : 0;
  }
  // Binomial(n, p): exact by inversion when n*min(p, 1-p) < 30, normal approximation above.
  std::uint64_t binomial(std::uint64_t n, double p) noexcept {
    if (n == 0 || !(p > 0)) return 0;
    if (p >= 1) return n;
    if (p > 0.5) return n - binomial(n, 1 - p);
    const double mean = static_cast<double>(n) * p;
    if (mean < 30) {
      // Inversion over the pmf: P(0) = (1-p)^n, P(k+1) = P(k) (n-k)/(k+1) p/(1-p).
      const double q = p / (1 - p);
      double pk = std::exp(static_cast<double>(n) * std::log1p(-p));
      double u = uniform();
      std::uint64_t k = 0;
      while (u > pk && k < n) {
        u -= pk;
        pk *= static_cast<double>(n - k) / static_cast<double>(k + 1) * q;
        ++k;
        if (pk <= 0) break;
      }
      return k;
    }
    const double x = std::round(mean + std::sqrt(mean * (1 - p)) * normal());
    return static_cast<std::uint64_t>(std::clamp(x, 0.0, static_cast<double>(n)));
  }

 private:
  std::uint64_t s_[4];
  double spare_ = 0;
  bool have_ = false;
};

std::uint64_t name_hash(const std::string& s) noexcept {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

// Running sums of one method's scores at one window size.
struct Acc {
  double n = 0, s = 0, ss = 0;
  void add(double v) noexcept {
    if (!(v == v)) return;
    n += 1;
    s += v;
    ss += v * v;
  }
  double mean() const noexcept { return n > 0 ? s / n : 0; }
  double sd() const noexcept {
    if (n < 2) return 0;
    const double m = s / n;
    return std::sqrt(std::max(0.0, (ss - n * m * m) / (n - 1)));
  }
};

NoiseEstimate finish(const NoiseOptions& o, std::span<const std::string_view> methods,
                     const std::vector<std::vector<Acc>>& acc) {
  NoiseEstimate e;
  e.replicates = o.replicates;
  e.coarse_bins = o.coarse_bins;
  e.windows = o.windows;
  for (std::size_t m = 0; m < methods.size(); ++m) {
    NoiseMethod nm;
    nm.method = std::string(methods[m]);
    for (const auto& a : acc[m]) {
      nm.mean.push_back(a.mean());
      nm.sd.push_back(a.sd());
    }
    e.methods.push_back(std::move(nm));
  }
  return e;
}

NoiseEstimate numeric_noise(const FeatureProfile& f, const NoiseOptions& o, Rng& rng) {
  const NumericReference ref = compile_numeric(f, o.coarse_bins, 0);
  if (!ref.has_bins) return {};
  const std::uint32_t bins = ref.lookup.bins();
  std::vector<double> p(bins);
  for (std::uint32_t i = 0; i < bins; ++i) p[i] = static_cast<double>(f.counts[i]) / ref.n;
  // Poisson means (and exp(-mean)) per bin: the reference draw, then each window size (its bins,
  // then the two overflow slots).
  const std::size_t nw = o.windows.size();
  std::vector<double> lam((nw + 1) * (bins + 2)), lim(lam.size());
  const double out_share = 1.0 / (ref.n + 1);
  for (std::size_t k = 0; k <= nw; ++k) {
    double* l = lam.data() + k * (bins + 2);
    const double w = k == 0 ? ref.n : static_cast<double>(o.windows[k - 1]);
    const double inside = k == 0 ? 1 : 1 - 2 * out_share;
    for (std::uint32_t i = 0; i < bins; ++i) l[i] = w * inside * p[i];
    l[bins] = l[bins + 1] = k == 0 ? 0 : w * out_share;
  }
  for (std::size_t i = 0; i < lam.size(); ++i) lim[i] = std::exp(-lam[i]);
  // A new value falls beyond the n reference values' range with probability 1/(n+1) on each side
  // (order statistics); its distance beyond is taken as the outermost bin's width.
  const double excess_lo = ref.lookup.edge(1) - ref.lookup.edge(0);
  const double excess_hi = ref.lookup.edge(bins) - ref.lookup.edge(bins - 1);
  const auto& methods = kNumericNoiseMethods;
  std::vector<std::vector<Acc>> acc(std::size(methods), std::vector<Acc>(o.windows.size()));
  NumericWindow rs, ws;
  for (std::uint32_t b = 0; b < o.replicates; ++b) {
    // A reference of the same size (Poisson counts per fine bin: the bins are narrow, so the
    // difference from multinomial counts is O(1/bins)).
    rs.reset(bins);
    for (std::uint32_t i = 0; i < bins; ++i) {
      rs.counts[i + 1] = static_cast<std::uint32_t>(std::min<std::uint64_t>(rng.poisson(lam[i], lim[i]), 0xffffffffu));
      rs.finite += rs.counts[i + 1];
    }
    if (rs.finite == 0) continue;
    for (std::size_t k = 0; k < o.windows.size(); ++k) {
      const double* l = lam.data() + (k + 1) * (bins + 2);
      const double* e = lim.data() + (k + 1) * (bins + 2);
      ws.reset(bins);
      for (std::uint32_t i = 0; i < bins; ++i) {
        ws.counts[i + 1] = static_cast<std::uint32_t>(std::min<std::uint64_t>(rng.poisson(l[i], e[i]), 0xffffffffu));
        ws.finite += ws.counts[i + 1];
      }
      ws.counts[0] = static_cast<std::uint32_t>(rng.poisson(l[bins], e[bins]));
      ws.counts[bins + 1] = static_cast<std::uint32_t>(rng.poisson(l[bins + 1], e[bins + 1]));
      ws.under_sum = ws.counts[0] * excess_lo;
      ws.over_sum = ws.counts[bins + 1] * excess_hi;
      ws.finite += ws.counts[0] + ws.counts[bins + 1];
      if (ws.finite == 0) continue;
      const NumericScores s = compare_fine_windows(ref, rs, ws);
      acc[0][k].add(s.wasserstein);
      acc[1][k].add(std::sqrt(std::max(0.0, s.psi)));
      acc[2][k].add(s.ks);
      acc[3][k].add(s.js);
      acc[4][k].add(s.hellinger);
    }
  }
  return finish(o, methods, acc);
}

// Multinomial(n, p) into out (p sums to 1), by conditional binomials.
void multinomial(Rng& rng, std::uint64_t n, const std::vector<double>& p, std::vector<std::uint32_t>& out) {
  double rest = 1;
  std::uint64_t left = n;
  for (std::size_t i = 0; i < p.size(); ++i) {
    std::uint64_t c = 0;
    if (i + 1 == p.size()) c = left;
    else if (left > 0 && rest > 0) c = rng.binomial(left, std::clamp(p[i] / rest, 0.0, 1.0));
    out[i] = static_cast<std::uint32_t>(std::min<std::uint64_t>(c, 0xffffffffu));
    left -= std::min(c, left);
    rest -= p[i];
  }
}

NoiseEstimate categorical_noise(const FeatureProfile& f, const NoiseOptions& o, Rng& rng) {
  const CategoricalReference ref = compile_categorical(f);
  if (!(ref.n > 0)) return {};
  const std::size_t cells = ref.counts.size();  // tracked + other
  std::vector<double> p(cells), pw(cells);
  for (std::size_t i = 0; i < cells; ++i) p[i] = ref.counts[i] / ref.n;
  // Values the reference never saw still appear in a window of the same population: Good-Turing
  // puts their probability at the share of values seen once.
  double singletons = 0;
  for (std::size_t i = 0; i + 1 < cells; ++i) singletons += ref.counts[i] == 1;
  const double unseen = singletons / ref.n;
  for (std::size_t i = 0; i < cells; ++i) pw[i] = p[i] * (1 - unseen);
  pw.back() += unseen;
  const auto& methods = kCategoricalNoiseMethods;
  std::vector<std::vector<Acc>> acc(std::size(methods), std::vector<Acc>(o.windows.size()));
  CategoricalWindow rs, ws;
  rs.reset(cells - 1);
  ws.reset(cells - 1);
  const auto n_ref = static_cast<std::uint64_t>(ref.n);
  for (std::uint32_t b = 0; b < o.replicates; ++b) {
    multinomial(rng, n_ref, p, rs.counts);
    rs.finite = n_ref;
    for (std::size_t k = 0; k < o.windows.size(); ++k) {
      multinomial(rng, o.windows[k], pw, ws.counts);
      ws.finite = o.windows[k];
      const CategoricalScores s = compare_categorical_windows(ref, rs, ws);
      acc[0][k].add(s.linf);
      acc[1][k].add(s.js);
      acc[2][k].add(std::sqrt(std::max(0.0, s.psi)));
      acc[3][k].add(s.ks);
    }
  }
  return finish(o, methods, acc);
}

double inv_sqrt_neff(double n_ref, double n) noexcept { return std::sqrt(1 / n_ref + 1 / n); }

}  // namespace

NoiseEstimate estimate_noise(const FeatureProfile& f, const NoiseOptions& options) {
  if (f.finite == 0 || options.windows.empty() || options.replicates < 2) return {};
  Rng rng(options.seed ^ name_hash(f.name));
  return f.kind == core::FeatureKind::numeric ? numeric_noise(f, options, rng)
                                              : categorical_noise(f, options, rng);
}

void estimate_profile_noise(ReferenceProfile& p, const NoiseOptions& options) {
  // Features [first, first + step, ...]: each writes only its own FeatureProfile::noise.
  const auto stripe = [&p, &options](std::size_t first, std::size_t step) {
    for (std::size_t i = first; i < p.features.size(); i += step) {
      auto& f = p.features[i];
      if (f.enabled) f.noise = estimate_noise(f, options);
    }
  };
  if (!options.helper_thread || p.features.size() < 2) {
    stripe(0, 1);
    return;
  }
  std::exception_ptr failed;
  std::thread helper;
  try {
    helper = std::thread([&] {
      try {
        stripe(1, 2);
      } catch (...) {
        failed = std::current_exception();
      }
    });
  } catch (const std::system_error&) {
    stripe(0, 1);  // no thread to be had: all of them here
    return;
  }
  try {
    stripe(0, 2);
  } catch (...) {
    helper.join();
    throw;
  }
  helper.join();
  if (failed) std::rethrow_exception(failed);
}

namespace {

// Interpolation shared by NoiseEstimate and NoiseTable: `count` window sizes window(k) with the
// method's mean(k) and sd(k).
template <class Window, class Mean, class Sd>
bool interpolate(std::size_t count, Window window, Mean mean, Sd sd, double n_ref, double n_window,
                 NoiseMoments& out) noexcept {
  if (count == 0 || !(n_ref > 0) || !(n_window > 0)) return false;
  const std::size_t last = count - 1;
  const double x = inv_sqrt_neff(n_ref, n_window);
  const auto xk = [&](std::size_t k) { return inv_sqrt_neff(n_ref, window(k)); };
  if (n_window <= window(0)) {
    const double r = x / xk(0);
    out = {mean(0) * r, sd(0) * r};
    return true;
  }
  if (n_window >= window(last)) {
    out = {mean(last), sd(last)};
    return true;
  }
  std::size_t k = 0;
  while (k + 1 < last && window(k + 1) <= n_window) ++k;
  const double x0 = xk(k), x1 = xk(k + 1);
  const double t = x0 > x1 ? (x0 - x) / (x0 - x1) : 0;
  out = {mean(k) + t * (mean(k + 1) - mean(k)), sd(k) + t * (sd(k + 1) - sd(k))};
  return true;
}

}  // namespace

bool noise_moments(const NoiseEstimate& e, std::string_view method, double n_ref, double n_window,
                   NoiseMoments& out) noexcept {
  const NoiseMethod* m = e.find(method);
  if (!m || m->mean.size() != e.windows.size() || m->sd.size() != e.windows.size()) return false;
  return interpolate(
      e.windows.size(), [&](std::size_t k) { return static_cast<double>(e.windows[k]); },
      [&](std::size_t k) { return m->mean[k]; }, [&](std::size_t k) { return m->sd[k]; }, n_ref, n_window, out);
}

NoiseTable::NoiseTable(const NoiseEstimate& e) noexcept {
  const std::size_t n = e.windows.size();
  if (n == 0) return;
  const std::size_t kept = std::min(n, kWindows);
  // Which of the estimate's window sizes are kept: all, or kWindows spread evenly.
  std::array<std::size_t, kWindows> from{};
  for (std::size_t k = 0; k < kept; ++k) from[k] = kept == 1 ? 0 : k * (n - 1) / (kept - 1);
  std::size_t row = 0;
  for (const auto& m : e.methods) {
    if (row == kMethods || m.mean.size() != n || m.sd.size() != n) continue;
    std::size_t id = 0;
    while (id < std::size(kNoiseMethodNames) && kNoiseMethodNames[id] != m.method) ++id;
    if (id == std::size(kNoiseMethodNames)) continue;
    method_[row] = static_cast<std::uint8_t>(id + 1);
    for (std::size_t k = 0; k < kept; ++k) {
      mean_[row][k] = static_cast<float>(m.mean[from[k]]);
      sd_[row][k] = static_cast<float>(m.sd[from[k]]);
    }
    ++row;
  }
  for (std::size_t k = 0; k < kept; ++k) window_[k] = static_cast<float>(e.windows[from[k]]);
  windows_ = static_cast<std::uint8_t>(kept);
}

bool NoiseTable::moments(std::string_view method, double n_ref, double n_window, NoiseMoments& out) const noexcept {
  for (std::size_t r = 0; r < kMethods && method_[r] != 0; ++r) {
    if (kNoiseMethodNames[method_[r] - 1] != method) continue;
    return interpolate(
        windows_, [&](std::size_t k) { return static_cast<double>(window_[k]); },
        [&](std::size_t k) { return static_cast<double>(mean_[r][k]); },
        [&](std::size_t k) { return static_cast<double>(sd_[r][k]); }, n_ref, n_window, out);
  }
  return false;
}

double noise_floor(const NoiseMoments& m, std::string_view method, double z) noexcept {
  const double v = m.mean + z * m.sd;
  return method == "psi" ? v * v : v;
}

}  // namespace mltap::detectors
