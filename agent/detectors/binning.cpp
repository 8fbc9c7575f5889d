#include "agent/detectors/binning.hpp"

#include <algorithm>
#include <numeric>

#include "agent/detectors/stats.hpp"

namespace mltap::detectors {

using core::FeatureKind;

namespace {

bool finite(double x) noexcept { return x - x == 0; }

double trapezoid_abs(double a, double b, double w) noexcept {
  if ((a >= 0) == (b >= 0)) return w * (std::fabs(a) + std::fabs(b)) * 0.5;
  const double s = std::fabs(a) + std::fabs(b);
  return s > 0 ? w * (a * a + b * b) / (2 * s) : 0.0;
}

}  // namespace

BinLookup::BinLookup(std::span<const double> edges) {
  if (edges.size() < 2) return;
  bins_ = static_cast<std::uint32_t>(edges.size() - 1);
  lo_ = edges.front();
  hi_ = edges.back();
  // One grid cell per bin (at least 16): 2 bytes per bin, and a search of a few steps where
  // bins are denser than the grid.
  cells_ = std::max<std::uint32_t>(16, bins_);
  if (hi_ > lo_ && std::isfinite(hi_ - lo_)) {
    scale_ = static_cast<double>(cells_) / (hi_ - lo_);
  } else {
    scale_ = 0;
    cells_ = 1;
  }
  // For x in cell c, its bin b(x) = max{i : e_i <= x} lies in [L(c), H(c)] with
  // L(c) = max{i : cell(e_i) < c} and H(c) = max{i : cell(e_i) <= c}, because cell() is monotone.
  std::vector<std::uint32_t> edge_cell(edges.size());
  for (std::size_t i = 0; i < edges.size(); ++i) edge_cell[i] = cell_of(edges[i]);
  grid_.assign(cells_, 0);
  std::uint32_t maxspan = 0;
  std::size_t below = 0;  // number of edges with cell < c
  std::size_t upto = 0;   // number of edges with cell <= c
  for (std::uint32_t c = 0; c < cells_; ++c) {
    while (below < edges.size() && edge_cell[below] < c) ++below;
    while (upto < edges.size() && edge_cell[upto] <= c) ++upto;
    const std::uint32_t lo_bin = below > 0 ? static_cast<std::uint32_t>(below - 1) : 0;
    const std::uint32_t hi_bin = upto > 0 ? static_cast<std::uint32_t>(upto - 1) : 0;
    grid_[c] = static_cast<std::uint16_t>(lo_bin);
    maxspan = std::max(maxspan, hi_bin > lo_bin ? hi_bin - lo_bin : 0);
  }
  top_ = maxspan ? std::bit_ceil(maxspan + 1) / 2 : 0;
  padded_.reserve(edges.size() + 2 * static_cast<std::size_t>(top_) + 1);  // exact: no growth slack
  padded_.assign(edges.begin(), edges.end());
  padded_.resize(edges.size() + 2 * static_cast<std::size_t>(top_) + 1, std::numeric_limits<double>::infinity());
}

CategoryLookup::CategoryLookup(std::span<const double> categories) {
  if (categories.empty()) return;
  const std::size_t size = std::bit_ceil(std::max<std::size_t>(8, categories.size() * 2));
  table_.assign(size, Slot{0, kMissing});
  mask_ = size - 1;
  for (std::size_t c = 0; c < categories.size(); ++c) {
    const std::uint64_t key = bits(categories[c]);
    std::size_t i = hash(key) & mask_;
    while (table_[i].index != kMissing && table_[i].key != key) i = (i + 1) & mask_;
    if (table_[i].index == kMissing) {
      table_[i] = Slot{key, static_cast<std::uint32_t>(c)};
      ++count_;
    }
  }
}

// ---- numeric -------------------------------------------------------------------------------

std::size_t NumericReference::memory_bytes() const noexcept {
  return lookup.memory_bytes() + below.capacity() * sizeof(std::uint32_t) + atoms.capacity();
}

NumericReference compile_numeric(const FeatureProfile& f, std::uint32_t coarse_bins, double rank_error) {
  NumericReference r;
  r.mean = f.mean;
  r.sd = std::sqrt(std::max(0.0, f.variance));
  r.min = f.min;
  r.max = f.max;
  r.rank_error = rank_error;
  if (f.values > 0) {
    r.nan_rate = static_cast<double>(f.nan) / static_cast<double>(f.values);
    r.inf_rate = static_cast<double>(f.pos_inf + f.neg_inf) / static_cast<double>(f.values);
  }
  bool any = false;
  for (auto c : f.counts) any = any || c > 0;
  if (f.edges.size() < 2 || !any) return r;
  r.has_bins = true;
  r.lookup = BinLookup(f.edges);
  const std::uint32_t bins = r.lookup.bins();
  std::uint64_t sum = 0;
  for (auto c : f.counts) sum += c;
  // Exact below 2^32 values (every pinned reference, any practical profile); beyond, rescaled.
  const double scale = sum > 0xffffffffULL ? 4294967295.0 / static_cast<double>(sum) : 1.0;
  r.below.assign(bins + 1, 0);
  std::uint64_t run = 0;
  for (std::uint32_t i = 0; i < bins; ++i) {
    run += f.counts[i];
    r.below[i + 1] = scale == 1.0 ? static_cast<std::uint32_t>(run)
                                  : static_cast<std::uint32_t>(std::llround(static_cast<double>(run) * scale));
  }
  r.n = static_cast<double>(r.below[bins]);
  if (scale != 1.0) r.rank_error = std::min(1.0, r.rank_error + 1.0 / r.n);
  r.atoms.assign(f.atoms.begin(), f.atoms.end());
  r.atoms.resize(bins, 0);
  r.coarse_target = std::max<std::uint32_t>(1, coarse_bins);
  std::uint32_t groups = 0;
  r.for_each_coarse([&](std::uint32_t, std::uint32_t g) { groups = g; });
  r.coarse = groups;
  return r;
}

void NumericReference::coarse_reference(std::vector<double>& out) const {
  out.assign(coarse + 2, 0.0);
  for_each_coarse([&](std::uint32_t i, std::uint32_t g) { out[g] += static_cast<double>(below[i + 1] - below[i]); });
}

void NumericWindow::reset(std::uint32_t bins) {
  counts.assign(bins ? bins + 2 : 0, 0);
  values = nan = pos_inf = neg_inf = finite = 0;
  sum = sumsq = under_sum = over_sum = 0;
  min = std::numeric_limits<double>::infinity();
  max = -std::numeric_limits<double>::infinity();
}

double NumericWindow::sd() const noexcept {
  if (finite < 2) return NAN;
  const double n = static_cast<double>(finite);
  const double m = sum / n;
  return std::sqrt(std::max(0.0, sumsq / n - m * m));
}

void add_numeric(const NumericReference& ref, NumericWindow& w, const double* v, std::size_t n,
                 std::size_t stride) noexcept {
  const double shift = ref.mean;
  double sum = 0, sumsq = 0, mn = w.min, mx = w.max;
  std::uint64_t fin = 0;
  w.values += n;
  // Counts non-finite values, accumulates the finite ones; true when x is finite. One loop per
  // case below (with and without bins) so the common path has no per-value branch on has_bins.
  const auto moments = [&](double x) noexcept {
    if (!finite(x)) [[unlikely]] {
      if (x != x) ++w.nan; else if (x > 0) ++w.pos_inf; else ++w.neg_inf;
      return false;
    }
    const double d = x - shift;
    sum += d;
    sumsq += d * d;
    mn = x < mn ? x : mn;
    mx = x > mx ? x : mx;
    ++fin;
    return true;
  };
  if (!ref.has_bins) {
    for (std::size_t i = 0; i < n; ++i) moments(v[i * stride]);
  } else {
    std::uint32_t* counts = w.counts.data();
    const std::uint32_t over_slot = ref.lookup.bins() + 1;
    const double lo = ref.lookup.lo(), hi = ref.lookup.hi();
    for (std::size_t i = 0; i < n; ++i) {
      const double x = v[i * stride];
      if (!moments(x)) continue;
      const std::uint32_t s = ref.lookup.slot(x);
      ++counts[s];
      if (s == 0 || s == over_slot) [[unlikely]] {
        if (s == 0) w.under_sum += lo - x; else w.over_sum += x - hi;
      }
    }
  }
  w.finite += fin;
  w.sum += sum;
  w.sumsq += sumsq;
  w.block_sum += sum;
  w.block_n += fin;
  w.min = mn;
  w.max = mx;
}

namespace {

void coarse_counts(const NumericReference& ref, const NumericWindow& w, std::vector<double>& out) {
  const std::uint32_t bins = ref.lookup.bins();
  out.assign(ref.coarse + 2, 0.0);
  out[0] = w.counts[0];
  out[ref.coarse + 1] = w.counts[bins + 1];
  ref.for_each_coarse([&](std::uint32_t i, std::uint32_t g) { out[g] += w.counts[i + 1]; });
}

void fill_coarse_scores(const std::vector<double>& ref_counts, const std::vector<double>& cur_counts,
                        NumericScores& s) {
  const auto p = smoothed_probabilities(ref_counts, 0.5);
  const auto q = smoothed_probabilities(cur_counts, 0.5);
  s.psi = psi(p, q);
  const auto pr = normalized(ref_counts);
  const auto qr = normalized(cur_counts);
  s.js = js_distance(pr, qr);
  s.hellinger = hellinger(pr, qr);
}

double spread(const NumericReference& ref) noexcept {
  if (ref.sd > 0) return ref.sd;
  return std::max(1e-12, 1e-9 * std::fabs(ref.mean));
}

}  // namespace

NumericScores compare_numeric(const NumericReference& ref, const NumericWindow& cur, double p_value_max_n) {
  NumericScores s;
  if (!ref.has_bins || cur.finite == 0) return s;
  const std::uint32_t bins = ref.lookup.bins();
  const double n = static_cast<double>(cur.finite);
  double below = cur.counts[0];
  double d_prev = below / n - ref.cum(0);
  double ks = std::fabs(d_prev), ks_bound = 0, w1 = (cur.under_sum + cur.over_sum) / n, w_bound = 0;
  for (std::uint32_t i = 0; i < bins; ++i) {
    const double q = cur.counts[i + 1] / n;
    const double p = ref.cum(i + 1) - ref.cum(i);
    below += cur.counts[i + 1];
    const double d_next = below / n - ref.cum(i + 1);
    const double w = ref.lookup.edge(i + 1) - ref.lookup.edge(i);
    if (ref.atoms[i]) {
      w1 += w * std::fabs(d_next);
      w_bound += w * q;
      ks_bound = std::max(ks_bound, q);
    } else {
      w1 += trapezoid_abs(d_prev, d_next, w);
      w_bound += w * (p + q);
      ks_bound = std::max(ks_bound, std::max(p, q));
    }
    ks = std::max(ks, std::fabs(d_next));
    d_prev = d_next;
  }
  const double sd = spread(ref);
  s.ks = ks;
  s.ks_bound = ks_bound + ref.rank_error;
  s.wasserstein = w1 / sd;
  s.wasserstein_bound = w_bound / sd;
  s.n_eff = n * ref.n / (n + ref.n);
  if (s.n_eff <= p_value_max_n) s.ks_p_value = ks_p_value(ks, n, ref.n);
  std::vector<double> cc, rc;
  coarse_counts(ref, cur, cc);
  ref.coarse_reference(rc);
  fill_coarse_scores(rc, cc, s);
  return s;
}

void roll_numeric_window(const NumericReference& ref, NumericWindow& cur, NumericWindow& prev) {
  std::vector<std::uint32_t> coarse = std::move(prev.counts);
  if (coarse.capacity() > ref.coarse + 2) std::vector<std::uint32_t>().swap(coarse);  // was fine (first roll)
  std::vector<std::uint32_t> fine = std::move(cur.counts);
  if (ref.has_bins && !fine.empty()) {
    const std::uint32_t bins = ref.lookup.bins();
    coarse.assign(ref.coarse + 2, 0);
    coarse[0] = fine[0];
    coarse[ref.coarse + 1] = fine[bins + 1];
    ref.for_each_coarse([&](std::uint32_t i, std::uint32_t g) { coarse[g] += fine[i + 1]; });
  } else {
    coarse.clear();
  }
  const double block_sum = cur.block_sum;
  const std::uint64_t block_n = cur.block_n;
  prev = std::move(cur);
  prev.counts = std::move(coarse);
  prev.block_sum = 0;
  prev.block_n = 0;
  cur.counts = std::move(fine);
  cur.reset(ref.has_bins ? ref.lookup.bins() : 0);
  cur.block_sum = block_sum;
  cur.block_n = block_n;
}

namespace {

// KS and W1 between two windows counted on one grid of `cells` cells (slot 0 below the reference
// range, 1..cells inside; x's counts x(g), y's y(g)), the grid cell g being width(g) wide and a
// point mass when atom(g): linear CDFs inside a cell (trapezoid), a point mass as a step, the
// parts beyond the reference range from the windows' own distance sums. Sets ks, wasserstein
// (over the reference's spread) and n_eff.
template <class X, class Y, class Width, class Atom>
void cdf_distances(const NumericReference& ref, const NumericWindow& xw, const NumericWindow& yw,
                   std::uint32_t cells, X x, Y y, Width width, Atom atom, NumericScores& s) {
  const double n = static_cast<double>(xw.finite), m = static_cast<double>(yw.finite);
  double bx = x(0), by = y(0);
  double d_prev = bx / n - by / m;
  double ks = std::fabs(d_prev);
  double w1 = std::fabs(xw.under_sum / n - yw.under_sum / m) + std::fabs(xw.over_sum / n - yw.over_sum / m);
  for (std::uint32_t g = 1; g <= cells; ++g) {
    bx += x(g);
    by += y(g);
    const double d_next = bx / n - by / m;
    const double w = width(g);
    w1 += atom(g) ? w * std::fabs(d_next) : trapezoid_abs(d_prev, d_next, w);
    ks = std::max(ks, std::fabs(d_next));
    d_prev = d_next;
  }
  s.ks = ks;
  s.wasserstein = w1 / spread(ref);
  s.n_eff = n * m / (n + m);
}

}  // namespace

NumericScores compare_numeric_windows(const NumericReference& ref, const NumericWindow& prev,
                                      const NumericWindow& cur) {
  NumericScores s;
  if (!ref.has_bins || cur.finite == 0 || prev.finite == 0 || prev.counts.size() != ref.coarse + 2) return s;
  std::vector<double> cc;
  coarse_counts(ref, cur, cc);
  // Coarse bin g spans fine bins [first[g], last[g]]: its edges are theirs; it is a point mass
  // when it is one atom fine bin.
  std::vector<std::uint32_t> first(ref.coarse + 2, 0), last(ref.coarse + 2, 0);
  std::uint32_t seen = 0;
  ref.for_each_coarse([&](std::uint32_t i, std::uint32_t g) {
    if (g != seen) {
      first[g] = i;
      seen = g;
    }
    last[g] = i;
  });
  cdf_distances(
      ref, cur, prev, ref.coarse, [&](std::uint32_t g) { return cc[g]; },
      [&](std::uint32_t g) { return static_cast<double>(prev.counts[g]); },
      [&](std::uint32_t g) { return ref.lookup.edge(last[g] + 1) - ref.lookup.edge(first[g]); },
      [&](std::uint32_t g) { return first[g] == last[g] && ref.atoms[first[g]]; }, s);
  std::vector<double> pc(prev.counts.begin(), prev.counts.end());
  fill_coarse_scores(pc, cc, s);
  return s;
}

NumericScores compare_fine_windows(const NumericReference& ref, const NumericWindow& a,
                                   const NumericWindow& b) {
  NumericScores s;
  if (!ref.has_bins || b.finite == 0 || a.finite == 0) return s;
  cdf_distances(
      ref, b, a, ref.lookup.bins(), [&](std::uint32_t g) { return static_cast<double>(b.counts[g]); },
      [&](std::uint32_t g) { return static_cast<double>(a.counts[g]); },
      [&](std::uint32_t g) { return ref.lookup.edge(g) - ref.lookup.edge(g - 1); },
      [&](std::uint32_t g) { return ref.atoms[g - 1] != 0; }, s);
  std::vector<double> cb, ca;
  coarse_counts(ref, b, cb);
  coarse_counts(ref, a, ca);
  fill_coarse_scores(ca, cb, s);
  return s;
}

// ---- categorical ---------------------------------------------------------------------------

std::size_t CategoricalReference::memory_bytes() const noexcept {
  return lookup.memory_bytes() + categories.capacity() * sizeof(double) + counts.capacity() * sizeof(double);
}

CategoricalReference compile_categorical(const FeatureProfile& f) {
  CategoricalReference r;
  r.categories = f.categories;
  r.lookup = CategoryLookup(r.categories);
  r.order.resize(r.categories.size());
  std::iota(r.order.begin(), r.order.end(), 0u);
  std::sort(r.order.begin(), r.order.end(),
            [&](std::uint32_t a, std::uint32_t b) { return r.categories[a] < r.categories[b]; });
  r.counts.reserve(f.categories.size() + 1);
  for (auto c : f.category_counts) r.counts.push_back(static_cast<double>(c));
  r.counts.resize(f.categories.size(), 0.0);
  r.counts.push_back(static_cast<double>(f.other_count));
  r.n = std::accumulate(r.counts.begin(), r.counts.end(), 0.0);
  r.exhaustive = f.exhaustive;
  r.mean = f.mean;
  r.sd = std::sqrt(std::max(0.0, f.variance));
  if (f.values > 0) {
    r.nan_rate = static_cast<double>(f.nan) / static_cast<double>(f.values);
    r.inf_rate = static_cast<double>(f.pos_inf + f.neg_inf) / static_cast<double>(f.values);
  }
  return r;
}

void CategoricalWindow::reset(std::size_t tracked) {
  counts.assign(tracked + 1, 0);
  values = nan = pos_inf = neg_inf = finite = 0;
  sum = sumsq = 0;
  min = INFINITY;
  max = -INFINITY;
  unseen = FrequentItems(8);
}

void add_categorical(const CategoricalReference& ref, CategoricalWindow& w, const double* v,
                     std::size_t n, std::size_t stride) noexcept {
  const std::size_t other = ref.categories.size();
  const double shift = ref.mean;
  w.values += n;
  for (std::size_t i = 0; i < n; ++i) {
    const double x = v[i * stride];
    if (!finite(x)) [[unlikely]] {
      if (x != x) ++w.nan; else if (x > 0) ++w.pos_inf; else ++w.neg_inf;
      continue;
    }
    ++w.finite;
    const double d = x - shift;
    w.sum += d;
    w.sumsq += d * d;
    w.min = x < w.min ? x : w.min;
    w.max = x > w.max ? x : w.max;
    const std::uint32_t c = ref.lookup.find(x);
    if (c == CategoryLookup::kMissing) [[unlikely]] {
      ++w.counts[other];
      w.unseen.update(x);
    } else {
      ++w.counts[c];
    }
  }
}

namespace {
void fill_categorical(const std::vector<double>& ref_counts, const std::vector<double>& cur_counts,
                      CategoricalScores& s) {
  const auto p = normalized(ref_counts);
  const auto q = normalized(cur_counts);
  s.linf = linf(p, q);
  s.js = js_distance(p, q);
  s.psi = psi(smoothed_probabilities(ref_counts, 0.5), smoothed_probabilities(cur_counts, 0.5));
  double best = -1;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double d = std::fabs(p[i] - q[i]);
    if (d > best) {
      best = d;
      s.largest_change = i;
    }
  }
}
}  // namespace

double categorical_ks(const CategoricalReference& ref, std::span<const double> ref_counts,
                      std::span<const double> cur_counts,
                      std::span<const FrequentItems::Item> cur_extra) noexcept {
  const std::size_t other = ref.categories.size();
  double nr = 0, nc = 0;
  for (std::size_t i = 0; i <= other && i < ref_counts.size() && i < cur_counts.size(); ++i) {
    nr += ref_counts[i];
    nc += cur_counts[i];
  }
  if (nr <= 0 || nc <= 0) return NAN;
  // Walk the tracked values and the window's extra values in increasing order; the CDFs are
  // compared after each distinct value (right-continuous, as scipy.stats.ks_2samp).
  double sr = 0, sc = 0, d = 0;
  std::size_t e = 0;
  const auto step = [&](double r, double c) {
    sr += r;
    sc += c;
    d = std::max(d, std::fabs(sr / nr - sc / nc));
  };
  for (std::size_t k = 0; k < ref.order.size(); ++k) {
    const std::uint32_t i = ref.order[k];
    const double v = ref.categories[i];
    for (; e < cur_extra.size() && cur_extra[e].value < v; ++e) step(0, static_cast<double>(cur_extra[e].count));
    step(ref_counts[i], cur_counts[i]);
  }
  for (; e < cur_extra.size(); ++e) step(0, static_cast<double>(cur_extra[e].count));
  return d;
}

CategoricalScores compare_categorical(const CategoricalReference& ref, const CategoricalWindow& cur,
                                      double p_value_max_n) {
  CategoricalScores s;
  const double n = static_cast<double>(cur.finite);
  if (n <= 0 || ref.n <= 0) return s;
  std::vector<double> cc(cur.counts.begin(), cur.counts.end());
  fill_categorical(ref.counts, cc, s);
  {
    const std::size_t other = ref.categories.size();
    std::vector<FrequentItems::Item> extra;
    double unknown = ref.counts[other] / ref.n;
    if (cc[other] > 0) {
      if (cur.unseen.exact()) {
        extra = cur.unseen.items();
        std::sort(extra.begin(), extra.end(), [](const auto& a, const auto& b) { return a.value < b.value; });
      } else {
        unknown += cc[other] / n;
      }
    }
    s.ks = categorical_ks(ref, ref.counts, cc, extra);
    s.ks_bound = unknown;
  }
  const auto chi = chi_squared_2xk(ref.counts, cc);
  s.chi2 = chi.statistic;
  s.cramers_v = chi.cramers_v;
  s.n_eff = n * ref.n / (n + ref.n);
  if (chi.valid && s.n_eff <= p_value_max_n) s.chi2_p_value = chi.p_value;
  const std::size_t other = ref.categories.size();
  s.unseen_share = cc[other] / n;
  s.ref_other_share = ref.counts[other] / ref.n;
  double missing = 0;
  for (std::size_t i = 0; i < other; ++i) {
    const double p = ref.counts[i] / ref.n;
    // Expected at least 20 times even at the low end of the reference's own estimate of its
    // share (count - 3 sqrt(count)): a category seen once in a small reference proves nothing.
    const double low = std::max(0.0, ref.counts[i] - 3 * std::sqrt(ref.counts[i])) / ref.n;
    if (cc[i] == 0 && low * n >= 20) missing += p;
  }
  s.missing_share = missing;
  return s;
}

CategoricalScores compare_categorical_windows(const CategoricalReference& ref,
                                              const CategoricalWindow& prev,
                                              const CategoricalWindow& cur) {
  CategoricalScores s;
  if (prev.finite == 0 || cur.finite == 0) return s;
  std::vector<double> pc(prev.counts.begin(), prev.counts.end());
  std::vector<double> cc(cur.counts.begin(), cur.counts.end());
  fill_categorical(pc, cc, s);
  s.ks = categorical_ks(ref, pc, cc, {});
  const auto chi = chi_squared_2xk(pc, cc);
  s.chi2 = chi.statistic;
  s.cramers_v = chi.cramers_v;
  return s;
}

// ---- pinned builder ------------------------------------------------------------------------

PinnedFeatureBuilder::PinnedFeatureBuilder(const PinnedOptions& options)
    : opt_(options), kll_(options.kll_k),
      items_(2 * std::max(options.categorical_max_distinct, options.max_categories) + 1) {}

void PinnedFeatureBuilder::add_moments(double x) noexcept {
  if (!have_shift_) {
    shift_ = x;
    have_shift_ = true;
  }
  const double d = x - shift_;
  sum_ += d;
  sumsq_ += d * d;
  min_ = std::min(min_, x);
  max_ = std::max(max_, x);
  if (integer_valued_ && !(x == std::floor(x) && std::fabs(x) < 9007199254740992.0)) integer_valued_ = false;
}

void PinnedFeatureBuilder::add(const double* v, std::size_t n, std::size_t stride) {
  values_ += n;
  const bool track_items = !fitted_;
  for (std::size_t i = 0; i < n; ++i) {
    const double x = v[i * stride];
    if (!finite(x)) {
      if (x != x) ++nan_; else if (x > 0) ++pos_inf_; else ++neg_inf_;
      continue;
    }
    ++finite_;
    add_moments(x);
    if (track_items) {
      kll_.update(x);
      // Low-cardinality values of any dtype are categorical: track values until the summary
      // overflows (then the feature has too many distinct values), unless forced categorical.
      if (items_.exact() || opt_.forced_kind == FeatureKind::categorical) items_.update(x);
      continue;
    }
    if (kind_ == FeatureKind::numeric) {
      if (lookup_.bins() == 0) continue;
      const std::uint32_t s = lookup_.slot(x);
      ++counts_[s];
      if (s == 0) {
        under_min_ = std::min(under_min_, x);
        under_max_ = std::max(under_max_, x);
      } else if (s == lookup_.bins() + 1) {
        over_min_ = std::min(over_min_, x);
        over_max_ = std::max(over_max_, x);
      } else if (x != edges_[s - 1]) {
        not_atom_[s - 1] = 1;
      }
    } else {
      const std::uint32_t c = cat_lookup_.find(x);
      if (c == CategoryLookup::kMissing) {
        ++cat_counts_.back();
        exhaustive_ = false;
      } else {
        ++cat_counts_[c];
      }
    }
  }
}

void PinnedFeatureBuilder::fit() {
  if (fitted_) return;
  fitted_ = true;
  std::uint64_t singletons = 0;
  const auto seen = items_.items();
  for (const auto& it : seen) singletons += it.count == 1;
  const bool auto_categorical =
      finite_ > 0 && items_.exact() &&
      low_cardinality(integer_valued_, seen.size(), singletons, finite_, opt_.categorical_max_distinct);
  kind_ = opt_.forced_kind.value_or(auto_categorical ? FeatureKind::categorical : FeatureKind::numeric);
  if (kind_ == FeatureKind::numeric) {
    if (kll_.count() > 0) {
      std::vector<double> qs(opt_.bins + 1);
      for (std::uint32_t i = 0; i <= opt_.bins; ++i) qs[i] = static_cast<double>(i) / opt_.bins;
      auto e = kll_.quantiles(qs);
      e.front() = kll_.min();
      e.back() = kll_.max();
      e.erase(std::unique(e.begin(), e.end()), e.end());
      if (e.size() == 1) e.push_back(e.front());
      edges_ = std::move(e);
      lookup_ = BinLookup(edges_);
      counts_.assign(lookup_.bins() + 2, 0);
      not_atom_.assign(lookup_.bins(), 0);
    }
  } else {
    auto items = items_.items();
    if (items.size() > opt_.max_categories) items.resize(opt_.max_categories);
    for (const auto& it : items) categories_.push_back(it.value);
    exhaustive_ = items_.exact() && items_.items().size() <= opt_.max_categories;
    cat_lookup_ = CategoryLookup(categories_);
    cat_counts_.assign(categories_.size() + 1, 0);
  }
  kll_ = KllSketch(8);
  items_ = FrequentItems(1);
}

FeatureProfile PinnedFeatureBuilder::finish(std::string name) {
  if (!fitted_) fit();
  FeatureProfile f;
  f.name = std::move(name);
  f.kind = kind_;
  f.values = values_;
  f.nan = nan_;
  f.pos_inf = pos_inf_;
  f.neg_inf = neg_inf_;
  f.finite = finite_;
  if (finite_ > 0) {
    const double n = static_cast<double>(finite_);
    const double m = sum_ / n;
    f.mean = shift_ + m;
    f.variance = std::max(0.0, sumsq_ / n - m * m);
    f.min = min_;
    f.max = max_;
  }
  f.integer_valued = integer_valued_ && finite_ > 0;
  if (kind_ == FeatureKind::numeric) {
    if (edges_.size() < 2) return f;
    const std::uint32_t bins = lookup_.bins();
    std::vector<double> e = edges_;
    const bool extend = counts_.front() > 0 || counts_.back() > 0;
    if (extend && e.size() == 2 && e[0] == e[1]) e[1] = std::nextafter(e[0], INFINITY);
    std::vector<std::uint64_t> c(counts_.begin() + 1, counts_.begin() + 1 + bins);
    std::vector<std::uint8_t> a(bins);
    for (std::uint32_t i = 0; i < bins; ++i) a[i] = not_atom_[i] ? 0 : 1;
    if (counts_.front() > 0) {
      e.insert(e.begin(), under_min_);
      c.insert(c.begin(), counts_.front());
      a.insert(a.begin(), under_min_ == under_max_ ? 1 : 0);
    }
    if (counts_.back() > 0) {
      double left = std::max(over_min_, std::nextafter(e.back(), INFINITY));
      double right = over_max_ > left ? over_max_ : std::nextafter(left, INFINITY);
      // The previous last bin now ends (open) at `left`: it still holds everything up to the old
      // maximum, and no reference value lies between the two. The new bin is [left, right].
      e.back() = left;
      e.push_back(right);
      c.push_back(counts_.back());
      a.push_back(over_min_ == over_max_ && left == over_min_ ? 1 : 0);
    }
    f.edges = std::move(e);
    f.counts = std::move(c);
    f.atoms = std::move(a);
  } else {
    f.categories = categories_;
    f.category_counts.assign(cat_counts_.begin(), cat_counts_.end() - 1);
    f.other_count = cat_counts_.back();
    f.exhaustive = exhaustive_;
  }
  return f;
}

std::size_t PinnedFeatureBuilder::memory_bytes() const noexcept {
  return sizeof(*this) + kll_.memory_bytes() + items_.memory_bytes() + edges_.capacity() * sizeof(double) +
         lookup_.memory_bytes() + counts_.capacity() * sizeof(std::uint64_t) + not_atom_.capacity() +
         categories_.capacity() * sizeof(double) + cat_lookup_.memory_bytes() +
         cat_counts_.capacity() * sizeof(std::uint64_t);
}

}  // namespace mltap::detectors
