#include "agent/detectors/stats.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace mltap::detectors {

namespace {

// lgamma() writes the global signgam: not thread-safe (the noise bootstrap runs on two threads,
// estimate_profile_noise). lgamma_r returns the sign instead; a is positive here.
double log_gamma(double a) noexcept {
  int sign = 0;
  return ::lgamma_r(a, &sign);
}

}  // namespace

std::vector<double> smoothed_probabilities(std::span<const double> counts, double alpha) {
  double n = 0;
  for (double c : counts) n += c;
  const double denom = n + alpha * static_cast<double>(counts.size());
  std::vector<double> out(counts.size());
  for (std::size_t i = 0; i < counts.size(); ++i) out[i] = denom > 0 ? (counts[i] + alpha) / denom : 0;
  return out;
}

std::vector<double> normalized(std::span<const double> counts) {
  double n = 0;
  for (double c : counts) n += c;
  std::vector<double> out(counts.size(), 0.0);
  if (n > 0) {
    for (std::size_t i = 0; i < counts.size(); ++i) out[i] = counts[i] / n;
  }
  return out;
}

double psi(std::span<const double> p, std::span<const double> q) noexcept {
  double s = 0;
  for (std::size_t i = 0; i < p.size() && i < q.size(); ++i) {
    if (p[i] > 0 && q[i] > 0) s += (q[i] - p[i]) * std::log(q[i] / p[i]);
  }
  return s;
}

double js_distance(std::span<const double> p, std::span<const double> q) noexcept {
  double d = 0;
  for (std::size_t i = 0; i < p.size() && i < q.size(); ++i) {
    const double m = 0.5 * (p[i] + q[i]);
    if (p[i] > 0) d += 0.5 * p[i] * std::log2(p[i] / m);
    if (q[i] > 0) d += 0.5 * q[i] * std::log2(q[i] / m);
  }
  return std::sqrt(std::max(0.0, d));
}

double hellinger(std::span<const double> p, std::span<const double> q) noexcept {
  double bc = 0;
  for (std::size_t i = 0; i < p.size() && i < q.size(); ++i) bc += std::sqrt(p[i] * q[i]);
  return std::sqrt(std::max(0.0, 1.0 - bc));
}

double linf(std::span<const double> p, std::span<const double> q) noexcept {
  double m = 0;
  for (std::size_t i = 0; i < p.size() && i < q.size(); ++i) m = std::max(m, std::fabs(p[i] - q[i]));
  return m;
}

namespace {

// Regularized lower incomplete gamma P(a, x) by series, upper Q by continued fraction.
double gamma_p_series(double a, double x) {
  double sum = 1.0 / a, term = sum, ap = a;
  for (int i = 0; i < 1000; ++i) {
    ap += 1;
    term *= x / ap;
    sum += term;
    if (std::fabs(term) < std::fabs(sum) * 1e-15) break;
  }
  return sum * std::exp(-x + a * std::log(x) - log_gamma(a));
}

double gamma_q_fraction(double a, double x) {
  const double tiny = 1e-300;
  double b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d;
  for (int i = 1; i < 1000; ++i) {
    const double an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (std::fabs(d) < tiny) d = tiny;
    c = b + an / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1 / d;
    const double del = d * c;
    h *= del;
    if (std::fabs(del - 1) < 1e-15) break;
  }
  return std::exp(-x + a * std::log(x) - log_gamma(a)) * h;
}

}  // namespace

double chi2_sf(double x, double dof) noexcept {
  if (!(dof > 0)) return NAN;
  if (!(x > 0)) return 1.0;
  if (std::isinf(x)) return 0.0;
  const double a = dof / 2, xx = x / 2;
  if (xx < a + 1) return std::clamp(1.0 - gamma_p_series(a, xx), 0.0, 1.0);
  return std::clamp(gamma_q_fraction(a, xx), 0.0, 1.0);
}

ChiSquared chi_squared_2xk(std::span<const double> ref_counts, std::span<const double> cur_counts) {
  ChiSquared out;
  std::vector<double> r, c;
  for (std::size_t i = 0; i < ref_counts.size() && i < cur_counts.size(); ++i) {
    if (ref_counts[i] + cur_counts[i] > 0) {
      r.push_back(ref_counts[i]);
      c.push_back(cur_counts[i]);
    }
  }
  const double nr = std::accumulate(r.begin(), r.end(), 0.0);
  const double nc = std::accumulate(c.begin(), c.end(), 0.0);
  const double n = nr + nc;
  if (r.size() < 2 || nr <= 0 || nc <= 0) return out;
  out.dof = static_cast<double>(r.size() - 1);
  std::size_t small = 0;
  double stat = 0;
  for (std::size_t i = 0; i < r.size(); ++i) {
    const double col = r[i] + c[i];
    const double er = col * nr / n, ec = col * nc / n;
    if (er < 5) ++small;
    if (ec < 5) ++small;
    double orr = r[i], oc = c[i];
    if (out.dof == 1) {  // Yates, exactly as scipy: move each observation by up to 0.5 toward E
      auto yates = [](double o, double e) {
        const double diff = e - o;
        const double mag = std::min(0.5, std::fabs(diff));
        return o + (diff > 0 ? mag : diff < 0 ? -mag : 0.0);
      };
      orr = yates(orr, er);
      oc = yates(oc, ec);
    }
    stat += (orr - er) * (orr - er) / er + (oc - ec) * (oc - ec) / ec;
  }
  out.statistic = stat;
  out.p_value = chi2_sf(stat, out.dof);
  out.cramers_v = std::sqrt(stat / n);
  // Cochran: no expected count below 1 and at most 20% below 5.
  out.valid = small <= static_cast<std::size_t>(0.2 * 2 * static_cast<double>(r.size()));
  return out;
}

double ks_p_value(double d, double n, double m) noexcept {
  if (!(n > 0 && m > 0) || !(d >= 0)) return NAN;
  const double en = n * m / (n + m);
  const double s = std::sqrt(en);
  const double lambda = (s + 0.12 + 0.11 / s) * d;
  if (lambda < 0.2) return 1.0;
  double sum = 0;
  for (int j = 1; j <= 100; ++j) {
    const double term = std::exp(-2.0 * j * j * lambda * lambda);
    sum += (j % 2 ? 1 : -1) * term;
    if (term < 1e-17) break;
  }
  return std::clamp(2 * sum, 0.0, 1.0);
}

std::vector<bool> benjamini_hochberg(std::span<const double> p_values, double q) {
  std::vector<bool> reject(p_values.size(), false);
  std::vector<std::size_t> idx;
  for (std::size_t i = 0; i < p_values.size(); ++i) {
    if (!std::isnan(p_values[i])) idx.push_back(i);
  }
  const double m = static_cast<double>(idx.size());
  if (idx.empty()) return reject;
  std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return p_values[a] < p_values[b]; });
  std::size_t k = 0;  // number rejected
  for (std::size_t i = 0; i < idx.size(); ++i) {
    if (p_values[idx[i]] <= q * static_cast<double>(i + 1) / m) k = i + 1;
  }
  for (std::size_t i = 0; i < k; ++i) reject[idx[i]] = true;
  return reject;
}

double cusum_arl_one_sided(double k, double h) noexcept {
  const double b = h + 1.166;
  if (k == 0) return b * b;
  const double a = 2 * k * b;
  return (std::exp(a) - a - 1) / (2 * k * k);
}

double cusum_threshold(double arl_blocks, double k) noexcept {
  // Two one-sided charts alarm independently: ARL_two = ARL_one / 2.
  const double target = 2 * std::max(arl_blocks, 2.0);
  double lo = 0, hi = 1;
  while (cusum_arl_one_sided(k, hi) < target && hi < 1e6) hi *= 2;
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (cusum_arl_one_sided(k, mid) < target ? lo : hi) = mid;
  }
  return hi;
}

}  // namespace mltap::detectors

namespace mltap::detectors {

double cusum_tilt(std::span<const double> u, std::span<const double> w, double k) noexcept {
  const double fallback = 2 * k;
  if (u.empty() || u.size() != w.size() || !(k > 0)) return fallback;
  double top = -INFINITY;
  for (double x : u) top = std::max(top, x);
  if (!(top > k)) return fallback;  // the chart cannot rise: no false alarm at all
  // g(t) = log E[exp(t (u - k))] is convex with g(0) = 0 and g'(0) = E[u] - k < 0: one root > 0.
  // Values are shifted by the largest exponent so that nothing overflows.
  auto eval = [&](double t, double& g, double& dg) {
    const double m = t * (top - k);
    double s = 0, s1 = 0;
    for (std::size_t i = 0; i < u.size(); ++i) {
      const double e = w[i] * std::exp(t * (u[i] - k) - m);
      s += e;
      s1 += e * (u[i] - k);
    }
    g = m + std::log(s);
    dg = s1 / s;
  };
  double hi = fallback, g = 0, dg = 0;
  eval(hi, g, dg);
  for (int i = 0; i < 60 && !(g > 0); ++i) {
    hi *= 2;
    eval(hi, g, dg);
  }
  if (!(g > 0)) return fallback;
  // Newton from the right of the root of a convex function converges monotonically.
  double t = hi;
  for (int i = 0; i < 100; ++i) {
    const double next = t - g / dg;
    if (!(next > 0) || !(next < t)) break;
    t = next;
    eval(t, g, dg);
    if (!(g > 1e-13)) break;
  }
  return t > 0 && std::isfinite(t) ? t : fallback;
}

// M charts interleaved: independent dependency chains per value, in registers (M is a
// compile-time constant so the arrays unroll). With SSE2 one register holds a chart's two sides
// {S+, S-}, stepped by {x - k, -x - k}: the same roundings as update().
template <std::size_t M>
bool Cusum::advance_fixed(Cusum* charts, const double* u, const std::uint64_t* rec, std::size_t n) noexcept {
#if defined(__SSE2__)
  __m128d S[M], K[M], H[M];
  __m128i T[M];
  const __m128d zero = _mm_setzero_pd();
#pragma GCC unroll 8
  for (std::size_t j = 0; j < M; ++j) {
    S[j] = _mm_set_pd(charts[j].lo_, charts[j].hi_);
    K[j] = _mm_set1_pd(charts[j].k_);
    H[j] = _mm_set_pd(charts[j].h_dn_, charts[j].h_up_);
    T[j] = _mm_set_epi64x(static_cast<long long>(charts[j].lo_start_), static_cast<long long>(charts[j].hi_start_));
  }
  __m128d alarm = zero;
  for (std::size_t i = 0; i < n; ++i) {
    const __m128d sx = _mm_set_pd(-u[i], u[i]);
    const __m128i r = _mm_set1_epi64x(static_cast<long long>(rec[i]));
#pragma GCC unroll 8
    for (std::size_t j = 0; j < M; ++j) {
      const __m128i at_zero = _mm_castpd_si128(_mm_cmpeq_pd(S[j], zero));
      T[j] = _mm_or_si128(_mm_and_si128(at_zero, r), _mm_andnot_si128(at_zero, T[j]));
      S[j] = _mm_max_pd(_mm_add_pd(S[j], _mm_sub_pd(sx, K[j])), zero);
      alarm = _mm_or_pd(alarm, _mm_cmpgt_pd(S[j], H[j]));
    }
  }
  if (_mm_movemask_pd(alarm) != 0) return false;
#pragma GCC unroll 8
  for (std::size_t j = 0; j < M; ++j) {
    alignas(16) double sv[2];
    alignas(16) std::uint64_t tv[2];
    _mm_store_pd(sv, S[j]);
    _mm_store_si128(reinterpret_cast<__m128i*>(tv), T[j]);
    charts[j].hi_ = sv[0];
    charts[j].lo_ = sv[1];
    charts[j].hi_start_ = tv[0];
    charts[j].lo_start_ = tv[1];
  }
  return true;
#else
  double hi[M], lo[M], k[M], hu[M], hd[M];
  std::uint64_t hs[M], ls[M];
  for (std::size_t j = 0; j < M; ++j) {
    hi[j] = charts[j].hi_;
    lo[j] = charts[j].lo_;
    k[j] = charts[j].k_;
    hu[j] = charts[j].h_up_;
    hd[j] = charts[j].h_dn_;
    hs[j] = charts[j].hi_start_;
    ls[j] = charts[j].lo_start_;
  }
  bool alarm = false;
  for (std::size_t i = 0; i < n; ++i) {
    const double x = u[i];
    const std::uint64_t r = rec[i];
    for (std::size_t j = 0; j < M; ++j) {
      hs[j] = hi[j] == 0 ? r : hs[j];
      ls[j] = lo[j] == 0 ? r : ls[j];
      const double up = hi[j] + (x - k[j]), down = lo[j] - (x + k[j]);
      hi[j] = up > 0 ? up : 0;
      lo[j] = down > 0 ? down : 0;
      alarm |= (hi[j] > hu[j]) | (lo[j] > hd[j]);
    }
  }
  if (alarm) return false;
  for (std::size_t j = 0; j < M; ++j) {
    charts[j].hi_ = hi[j];
    charts[j].lo_ = lo[j];
    charts[j].hi_start_ = hs[j];
    charts[j].lo_start_ = ls[j];
  }
  return true;
#endif
}

bool Cusum::advance_all(std::span<Cusum> charts, const double* u, const std::uint64_t* rec,
                        std::size_t n) noexcept {
  switch (charts.size()) {
    case 1: return advance_fixed<1>(charts.data(), u, rec, n);
    case 2: return advance_fixed<2>(charts.data(), u, rec, n);
    case 3: return advance_fixed<3>(charts.data(), u, rec, n);
    case 4: return advance_fixed<4>(charts.data(), u, rec, n);
    case 5: return advance_fixed<5>(charts.data(), u, rec, n);
    case 6: return advance_fixed<6>(charts.data(), u, rec, n);
    case 7: return advance_fixed<7>(charts.data(), u, rec, n);
    case 8: return advance_fixed<8>(charts.data(), u, rec, n);
    default: return false;
  }
}

double cusum_arl_one_sided_tilted(double theta, double k, double h) noexcept {
  const double a = theta * (h + 1.166);
  return (std::exp(a) - a - 1) / (theta * k);
}

double cusum_threshold_tilted(double arl, double theta, double k) noexcept {
  double lo = 0, hi = 1;
  while (cusum_arl_one_sided_tilted(theta, k, hi) < arl && hi < 1e9) hi *= 2;
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (cusum_arl_one_sided_tilted(theta, k, mid) < arl ? lo : hi) = mid;
  }
  return hi;
}

}  // namespace mltap::detectors
