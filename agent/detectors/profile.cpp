#include "agent/detectors/profile.hpp"

#include <algorithm>
#include <bit>
#include <functional>
#include <chrono>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "agent/detectors/binning.hpp"
#include "agent/detectors/noise.hpp"
#include "core/time.hpp"

namespace mltap::detectors {

using core::feature_kind_name;
using core::FeatureKind;

using nlohmann::json;

std::size_t ReferenceProfile::column_count() const noexcept {
  if (layout == ProfileLayout::embeddings) return embedding ? embedding->dims : 0;
  return columns.size();
}

// ---- row transforms ------------------------------------------------------------------------

namespace {
std::uint64_t splitmix64(std::uint64_t& s) noexcept {
  std::uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
}  // namespace

RowTransform::RowTransform(ProfileLayout layout, std::size_t columns, const ProfileOptions& options)
    : layout_(layout), in_(columns), class_threshold_(options.class_threshold) {
  switch (layout) {
    case ProfileLayout::features: out_ = columns; break;
    case ProfileLayout::predictions: out_ = columns + 1; break;
    case ProfileLayout::embeddings: {
      projections_ = options.embedding_projections;
      seed_ = options.embedding_seed;
      out_ = 1 + projections_;
      // Very sparse random sign projections: each uses ~sqrt(d) distinct dimensions, so their
      // cost does not grow with d the way one test per dimension would.
      nnz_ = static_cast<std::uint32_t>(std::max<double>(1, std::round(std::sqrt(static_cast<double>(columns)))));
      nnz_ = std::min<std::uint32_t>(nnz_, static_cast<std::uint32_t>(std::max<std::size_t>(columns, 1)));
      std::uint64_t s = seed_;
      std::vector<std::uint32_t> perm(columns);
      for (std::uint32_t p = 0; p < projections_; ++p) {
        for (std::uint32_t i = 0; i < columns; ++i) perm[i] = i;
        for (std::uint32_t i = 0; i < nnz_ && i < columns; ++i) {
          const std::uint64_t j = i + splitmix64(s) % (columns - i);
          std::swap(perm[i], perm[j]);
          proj_index_.push_back(perm[i]);
          proj_sign_.push_back((splitmix64(s) & 1) ? 1.0f : -1.0f);
        }
      }
      break;
    }
  }
}

std::vector<std::string> RowTransform::feature_names(const std::vector<std::string>& columns) const {
  std::vector<std::string> out;
  switch (layout_) {
    case ProfileLayout::features:
    case ProfileLayout::predictions: {
      for (std::size_t i = 0; i < in_; ++i) {
        if (i < columns.size() && !columns[i].empty()) out.push_back(columns[i]);
        else if (layout_ == ProfileLayout::predictions) out.push_back(in_ == 1 ? "score" : "p" + std::to_string(i));
        else out.push_back("f" + std::to_string(i));
      }
      if (layout_ == ProfileLayout::predictions) {
        std::string name = "class";
        while (std::find(out.begin(), out.end(), name) != out.end()) name = "_" + name;
        out.push_back(name);
      }
      break;
    }
    case ProfileLayout::embeddings:
      out.push_back("norm");
      for (std::uint32_t p = 0; p < projections_; ++p) out.push_back("proj_" + std::to_string(p));
      break;
  }
  return out;
}

void RowTransform::apply(const double* row, double* out) const noexcept {
  switch (layout_) {
    case ProfileLayout::features:
      std::copy(row, row + in_, out);
      return;
    case ProfileLayout::predictions: {
      std::copy(row, row + in_, out);
      if (in_ == 1) {
        const double x = row[0];
        out[1] = x != x ? NAN : (x >= class_threshold_ ? 1.0 : 0.0);
      } else {
        std::size_t best = 0;
        bool bad = false;
        for (std::size_t i = 0; i < in_; ++i) {
          if (row[i] != row[i]) bad = true;
          if (row[i] > row[best]) best = i;
        }
        out[in_] = bad || in_ == 0 ? NAN : static_cast<double>(best);
      }
      return;
    }
    case ProfileLayout::embeddings: {
      double ss = 0;
      for (std::size_t i = 0; i < in_; ++i) ss += row[i] * row[i];
      out[0] = std::sqrt(ss);
      const double scale = 1.0 / std::sqrt(static_cast<double>(nnz_));
      for (std::uint32_t p = 0; p < projections_; ++p) {
        double acc = 0;
        const std::uint32_t* idx = proj_index_.data() + static_cast<std::size_t>(p) * nnz_;
        const float* sg = proj_sign_.data() + static_cast<std::size_t>(p) * nnz_;
        for (std::uint32_t j = 0; j < nnz_; ++j) acc += sg[j] * row[idx[j]];
        out[1 + p] = acc * scale;
      }
      return;
    }
  }
}

// ---- offline build -------------------------------------------------------------------------
//
// One feature costs a few linear passes over its values and no full sort (docs/profile-format.md,
// "Edges"): moments and the integer check; a count of distinct values for integer features (up
// to the categorical limit); edges at the quantiles of a stratified sample (all values when there
// are at most kExactEdgeValues, then exactly the rule of a full sort); one exact counting pass.

bool low_cardinality(bool integer_valued, std::uint64_t distinct, std::uint64_t singletons,
                     std::uint64_t finite, std::uint32_t max_distinct) noexcept {
  if (finite == 0 || distinct > max_distinct) return false;
  // Non-integer values only when they repeat: a small sample of continuous values, or rounded
  // continuous values with a tail of values seen once, stays numeric.
  return integer_valued || (singletons == 0 && 2 * distinct <= finite);
}

namespace {

bool is_finite(double x) noexcept { return x - x == 0; }

// Up to this many finite values, edges are exact quantiles of all values (one sort); above it,
// exact quantiles of a stratified sample of kEdgeSample values. Counts are exact either way.
constexpr std::size_t kExactEdgeValues = 65536;
constexpr std::size_t kEdgeSample = 65536;

struct Moments {
  double mean = 0, variance = 0, min = 0, max = 0;
  bool integer = true;
};

// Sums in blocks of doubles, blocks in long double: as accurate as a long double sum over these
// sizes, without the x87 cost per value.
Moments moments_of(std::span<const double> v) {
  Moments m;
  const std::size_t n = v.size();
  constexpr std::size_t kBlock = 1024;
  long double s = 0;
  double mn = v[0], mx = v[0];
  for (std::size_t i = 0; i < n; i += kBlock) {
    const std::size_t end = std::min(n, i + kBlock);
    double b = 0;
    for (std::size_t k = i; k < end; ++k) {
      b += v[k];
      mn = v[k] < mn ? v[k] : mn;
      mx = v[k] > mx ? v[k] : mx;
    }
    s += b;
  }
  const double mean = static_cast<double>(s / static_cast<long double>(n));
  long double ss = 0;
  for (std::size_t i = 0; i < n; i += kBlock) {
    const std::size_t end = std::min(n, i + kBlock);
    double b = 0;
    for (std::size_t k = i; k < end; ++k) b += (v[k] - mean) * (v[k] - mean);
    ss += b;
  }
  bool integer = true;
  for (std::size_t i = 0; i < n && integer; ++i) {
    integer = v[i] == std::floor(v[i]) && std::fabs(v[i]) < 9007199254740992.0;
  }
  m.mean = mean;
  m.variance = static_cast<double>(ss / static_cast<long double>(n));
  m.min = mn;
  m.max = mx;
  m.integer = integer;
  return m;
}

std::uint64_t value_key(double x) noexcept { return std::bit_cast<std::uint64_t>(x == 0 ? 0.0 : x); }

// Exact counts of the distinct values (-0 and +0 one value); stops (returns false) once there are
// more than `limit`.
bool count_values(std::span<const double> v, std::size_t limit,
                  std::vector<std::pair<double, std::uint64_t>>& out) {
  const std::size_t size = std::bit_ceil(std::max<std::size_t>(16, 2 * (limit + 1)));
  struct Slot {
    std::uint64_t key;
    std::uint64_t count;  // 0: empty
    double value;
  };
  std::vector<Slot> table(size, Slot{0, 0, 0});
  std::size_t used = 0;
  for (double x : v) {
    const std::uint64_t k = value_key(x);
    std::size_t i = static_cast<std::size_t>((k * 0x9E3779B97F4A7C15ULL) >> 40) & (size - 1);
    while (table[i].count != 0 && table[i].key != k) i = (i + 1) & (size - 1);
    if (table[i].count == 0) {
      if (++used > limit) return false;
      table[i] = Slot{k, 0, x == 0 ? 0.0 : x};
    }
    ++table[i].count;
  }
  out.clear();
  for (const auto& s : table) {
    if (s.count) out.emplace_back(s.value, s.count);
  }
  std::sort(out.begin(), out.end());
  return true;
}

// Candidate edges: quantiles of `sorted` (all values, or a sample) by the documented rule, the
// ends replaced by the exact minimum and maximum, and for a value that several quantiles hit
// the next larger value of `sorted` as an extra edge.
std::vector<double> quantile_edges(std::span<const double> sorted, std::uint32_t bins, double min,
                                   double max) {
  const std::size_t m = sorted.size();
  std::vector<double> e;
  e.reserve(bins + 1);
  for (std::uint32_t i = 0; i < bins; ++i) {
    const auto pos = static_cast<std::size_t>((static_cast<unsigned __int128>(i) * m) / bins);
    e.push_back(sorted[pos]);
  }
  e.front() = min;
  e.push_back(max);
  const std::size_t picked = e.size();
  for (std::size_t i = 1; i < picked; ++i) {
    if (e[i] == e[i - 1]) {
      auto next = std::upper_bound(sorted.begin(), sorted.end(), e[i]);
      if (next != sorted.end() && e.size() < kMaxBins) {
        e.push_back(*next);
      } else if (next == sorted.end() && e.front() < e[i] && e.size() < kMaxBins) {
        // The maximum as an atom gets its own closed bin [max, the next double above it], so
        // that discrete data is binned, and compared, exactly (a constant feature keeps its two
        // equal edges).
        e.push_back(std::nextafter(e[i], std::numeric_limits<double>::infinity()));
      }
    }
  }
  std::sort(e.begin(), e.end());
  e.erase(std::unique(e.begin(), e.end()), e.end());
  if (e.size() == 1) e.push_back(e.front());
  return e;
}

void numeric_bins(FeatureProfile& f, std::span<double> fin, const ProfileOptions& opt) {
  const std::uint32_t bins = std::clamp<std::uint32_t>(opt.bins, 1, kMaxBins);
  const std::size_t m = fin.size();
  const bool sampled = m > kExactEdgeValues;
  std::vector<double> e;
  if (!sampled) {
    std::sort(fin.begin(), fin.end());
    e = quantile_edges(fin, bins, f.min, f.max);
  } else {
    // Stratified sample: one value drawn from each of kEdgeSample equal slices, so that the
    // sample follows the data's order as well as its distribution; seeded, so a profile
    // rebuilt from the same data is the same.
    std::vector<double> sample(kEdgeSample);
    std::uint64_t seed = 0x70726f66696c65ULL ^ m;
    for (std::size_t k = 0; k < kEdgeSample; ++k) {
      const std::size_t lo = static_cast<std::size_t>((static_cast<unsigned __int128>(k) * m) / kEdgeSample);
      const std::size_t hi = static_cast<std::size_t>((static_cast<unsigned __int128>(k + 1) * m) / kEdgeSample);
      sample[k] = fin[lo + splitmix64(seed) % (hi - lo)];
    }
    std::sort(sample.begin(), sample.end());
    e = quantile_edges(sample, bins, f.min, f.max);
  }
  // Exact counting pass. Per bin also: values equal to the left edge and the smallest value
  // above it, to give a heavy value that the sample placed in a shared bin a bin of its own.
  const BinLookup lookup(e);
  const std::size_t nb = lookup.bins();
  std::vector<std::uint64_t> counts(nb + 2, 0), equal(nb, 0);
  std::vector<std::uint8_t> mixed(nb, 0);
  std::vector<double> above(nb, std::numeric_limits<double>::infinity());
  std::vector<double> top(nb, -std::numeric_limits<double>::infinity());
  for (double x : fin) {
    const std::uint32_t s = lookup.slot(x);
    ++counts[s];
    const std::uint32_t b = s - 1;  // every value is within [min, max]: never slot 0 or nb + 1
    if (x == e[b]) {
      ++equal[b];
    } else {
      mixed[b] = 1;
      above[b] = x < above[b] ? x : above[b];
      top[b] = x > top[b] ? x : top[b];
    }
  }
  f.edges.clear();
  f.counts.clear();
  f.atoms.clear();
  for (std::size_t b = 0; b < nb; ++b) {
    const std::uint64_t c = counts[b + 1];
    // The full-sort rule gives a value with at least m / B occurrences (several quantiles) a bin
    // of its own; so does this, whenever the sample did not.
    const bool split = sampled && mixed[b] && equal[b] > 0 &&
                       static_cast<double>(equal[b]) * bins >= static_cast<double>(m) &&
                       f.edges.size() + 2 <= kMaxBins;
    f.edges.push_back(e[b]);
    if (split) {
      f.counts.push_back(equal[b]);
      f.atoms.push_back(1);
      f.edges.push_back(above[b]);
      f.counts.push_back(c - equal[b]);
      f.atoms.push_back(above[b] == top[b] ? 1 : 0);
    } else {
      f.counts.push_back(c);
      f.atoms.push_back(mixed[b] ? 0 : 1);
    }
  }
  f.edges.push_back(e[nb]);
}

FeatureProfile build_feature(std::string name, std::span<double> fin, std::uint64_t values,
                             std::uint64_t nan, std::uint64_t pos_inf, std::uint64_t neg_inf,
                             const ProfileOptions& opt, std::optional<FeatureKind> forced) {
  FeatureProfile f;
  f.name = std::move(name);
  f.values = values;
  f.nan = nan;
  f.pos_inf = pos_inf;
  f.neg_inf = neg_inf;
  f.finite = fin.size();
  if (fin.empty()) {
    f.kind = forced.value_or(FeatureKind::numeric);
    return f;
  }
  const Moments mo = moments_of(fin);
  f.mean = mo.mean;
  f.variance = mo.variance;
  f.min = mo.min;
  f.max = mo.max;
  f.integer_valued = mo.integer;
  std::vector<std::pair<double, std::uint64_t>> runs;  // distinct values ascending, with counts
  bool counted = false;
  if (forced == FeatureKind::categorical) {
    std::sort(fin.begin(), fin.end());
    for (std::size_t i = 0; i < fin.size();) {
      std::size_t j = i;
      while (j < fin.size() && fin[j] == fin[i]) ++j;
      runs.emplace_back(fin[i], j - i);
      i = j;
    }
  } else if (!forced) {
    // Any dtype: a column of few distinct values (a standardized binary column, a 5-level
    // scale stored as floats) is kept as exact value counts (low_cardinality says when).
    counted = count_values(fin, opt.categorical_max_distinct, runs);
  }
  std::uint64_t singletons = 0;
  for (const auto& r : runs) singletons += r.second == 1;
  const bool auto_cat = counted && low_cardinality(mo.integer, runs.size(), singletons, fin.size(),
                                                   opt.categorical_max_distinct);
  f.kind = forced.value_or(auto_cat ? FeatureKind::categorical : FeatureKind::numeric);
  if (f.kind == FeatureKind::numeric) {
    numeric_bins(f, fin, opt);
    return f;
  }
  std::stable_sort(runs.begin(), runs.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  const std::size_t keep = std::min<std::size_t>(runs.size(), std::clamp<std::uint32_t>(opt.max_categories, 1, kMaxCategories));
  for (std::size_t i = 0; i < runs.size(); ++i) {
    if (i < keep) {
      f.categories.push_back(runs[i].first);
      f.category_counts.push_back(runs[i].second);
    } else {
      f.other_count += runs[i].second;
    }
  }
  f.exhaustive = runs.size() <= keep;
  return f;
}

// Builds the features of a row-major n x w matrix, gathering a few columns per pass over it
// (a column at a time would read every cache line of the matrix once per column).
void build_features(ReferenceProfile& p, const double* data, std::size_t n, std::size_t w,
                    const std::vector<std::string>& names, const ProfileOptions& opt,
                    const std::function<std::optional<FeatureKind>(std::size_t)>& forced_kind) {
  constexpr std::size_t kGroup = 16;
  std::vector<std::vector<double>> fin(std::min(kGroup, w));
  for (auto& c : fin) c.resize(n);
  for (std::size_t j0 = 0; j0 < w; j0 += kGroup) {
    const std::size_t g = std::min(kGroup, w - j0);
    std::vector<std::size_t> kept(g, 0);
    std::vector<std::uint64_t> nan(g, 0), pinf(g, 0), ninf(g, 0);
    double* out[kGroup];
    for (std::size_t k = 0; k < g; ++k) out[k] = fin[k].data();
    for (std::size_t r = 0; r < n; ++r) {
      const double* row = data + r * w + j0;
      for (std::size_t k = 0; k < g; ++k) {
        const double x = row[k];
        out[k][kept[k]] = x;  // kept only if finite: the next value overwrites it otherwise
        if (is_finite(x)) [[likely]] {
          ++kept[k];
        } else if (x != x) {
          ++nan[k];
        } else if (x > 0) {
          ++pinf[k];
        } else {
          ++ninf[k];
        }
      }
    }
    for (std::size_t k = 0; k < g; ++k) {
      const std::span<double> col(fin[k].data(), kept[k]);
      p.features.push_back(build_feature(names[j0 + k], col, n, nan[k], pinf[k], ninf[k], opt, forced_kind(j0 + k)));
    }
  }
}

}  // namespace

ReferenceProfile build_profile(std::span<const double> rows, std::size_t cols,
                               std::vector<std::string> names, const ProfileOptions& options) {
  if (cols == 0) throw ProfileError("profile: the data has no columns");
  if (cols > kMaxEmbeddingDims) throw ProfileError("profile: too many columns (" + std::to_string(cols) + ", at most 65536)");
  if (rows.size() % cols != 0) throw ProfileError("profile: data size is not a multiple of the column count");
  const std::size_t n = rows.size() / cols;
  if (n == 0) throw ProfileError("profile: the data has no rows");
  if (options.bins < 2 || options.bins > kMaxBins) throw ProfileError("profile: bins must be between 2 and 4096");
  if (options.max_categories < 1 || options.max_categories > kMaxCategories) {
    throw ProfileError("profile: max_categories must be between 1 and 4096");
  }
  if (options.layout == ProfileLayout::embeddings &&
      (options.embedding_projections < 1 || options.embedding_projections > 256)) {
    throw ProfileError("profile: embedding projections must be between 1 and 256");
  }
  if (!names.empty()) {
    if (names.size() != cols) {
      throw ProfileError("profile: " + std::to_string(names.size()) + " feature names for " +
                         std::to_string(cols) + " columns");
    }
    std::set<std::string> seen;
    for (const auto& nm : names) {
      if (nm.empty() || nm.size() > 256) throw ProfileError("profile: feature names must be 1..256 bytes");
      if (!seen.insert(nm).second) throw ProfileError("profile: duplicate feature name '" + nm + "'");
    }
  }
  ReferenceProfile p;
  p.layout = options.layout;
  p.source = options.source;
  p.created_unix_ns = core::unix_now_ns();
  p.dtype = options.dtype;
  p.row_shape = options.row_shape.empty() ? std::vector<std::uint32_t>{static_cast<std::uint32_t>(cols)} : options.row_shape;
  p.rows = n;
  p.rank_error = 0;
  p.class_threshold = options.class_threshold;

  RowTransform t(options.layout, cols, options);
  const auto fnames = t.feature_names(names);
  for (const auto& forced : {options.categorical, options.numeric}) {
    for (const auto& nm : forced) {
      if (std::find(fnames.begin(), fnames.end(), nm) == fnames.end()) {
        throw ProfileError("profile: unknown feature '" + nm + "' in the categorical/numeric list");
      }
    }
  }
  auto forced_kind = [&](std::size_t j) -> std::optional<FeatureKind> {
    const auto& nm = fnames[j];
    if (std::find(options.categorical.begin(), options.categorical.end(), nm) != options.categorical.end()) return FeatureKind::categorical;
    if (std::find(options.numeric.begin(), options.numeric.end(), nm) != options.numeric.end()) return FeatureKind::numeric;
    if (options.layout == ProfileLayout::predictions && j == cols) return FeatureKind::categorical;
    if (options.layout == ProfileLayout::embeddings) return FeatureKind::numeric;
    return std::nullopt;
  };

  if (options.layout == ProfileLayout::features) {
    p.columns = fnames;
    build_features(p, rows.data(), n, cols, fnames, options, forced_kind);
  } else {
    if (options.layout == ProfileLayout::predictions) p.columns.assign(fnames.begin(), fnames.begin() + static_cast<std::ptrdiff_t>(cols));
    const std::size_t w = t.out_columns();
    std::vector<double> derived(n * w);
    for (std::size_t r = 0; r < n; ++r) t.apply(rows.data() + r * cols, derived.data() + r * w);
    build_features(p, derived.data(), n, w, fnames, options, forced_kind);
    if (options.layout == ProfileLayout::predictions && cols == 1) {
      const auto& s = p.features[0];
      p.features[1].enabled = s.finite > 0 && s.min >= 0 && s.max <= 1;
    }
    if (options.layout == ProfileLayout::embeddings) {
      EmbeddingProfile e;
      e.dims = static_cast<std::uint32_t>(cols);
      e.projections = options.embedding_projections;
      e.seed = options.embedding_seed;
      const std::size_t md = std::min<std::size_t>(cols, options.embedding_mean_dims);
      std::vector<long double> s1(cols, 0), s2(cols, 0);
      std::uint64_t good = 0;
      for (std::size_t r = 0; r < n; ++r) {
        const double* row = rows.data() + r * cols;
        bool ok = true;
        for (std::size_t j = 0; j < cols && ok; ++j) ok = is_finite(row[j]);
        if (!ok) continue;
        ++good;
        for (std::size_t j = 0; j < cols; ++j) {
          s1[j] += row[j];
          s2[j] += static_cast<long double>(row[j]) * row[j];
        }
      }
      e.rows = good;
      e.mean.assign(md, 0.0);
      if (good > 0) {
        long double tv = 0;
        for (std::size_t j = 0; j < cols; ++j) {
          const long double m = s1[j] / good;
          if (j < md) e.mean[j] = static_cast<double>(m);
          tv += std::max<long double>(0, s2[j] / good - m * m);
        }
        e.total_variance = static_cast<double>(tv);
      }
      p.embedding = std::move(e);
    }
  }
  if (options.noise) {
    NoiseOptions no;
    estimate_profile_noise(p, no);
  }
  validate_profile(p, "built profile");
  return p;
}

// ---- JSON ----------------------------------------------------------------------------------

std::string profile_to_json_text(const ReferenceProfile& p) {
  json j;
  j["format"] = "mltap-profile";
  j["version"] = p.version;
  j["layout"] = layout_name(p.layout);
  j["source"] = p.source;
  j["created_unix_ns"] = p.created_unix_ns;
  j["dtype"] = p.dtype;
  j["row_shape"] = p.row_shape;
  j["rows"] = p.rows;
  j["rank_error"] = p.rank_error;
  j["class_threshold"] = p.class_threshold;
  j["columns"] = p.columns;
  if (p.embedding) {
    const auto& e = *p.embedding;
    j["embedding"] = {{"dims", e.dims},       {"projections", e.projections},       {"seed", e.seed},
                      {"mean", e.mean},       {"total_variance", e.total_variance}, {"rows", e.rows}};
  } else {
    j["embedding"] = nullptr;
  }
  json feats = json::array();
  for (const auto& f : p.features) {
    json o = {{"name", f.name},       {"kind", feature_kind_name(f.kind)},
              {"enabled", f.enabled}, {"values", f.values},
              {"nan", f.nan},         {"pos_inf", f.pos_inf},
              {"neg_inf", f.neg_inf}, {"finite", f.finite},
              {"mean", f.mean},       {"variance", f.variance},
              {"min", f.min},         {"max", f.max},
              {"integer_valued", f.integer_valued}};
    if (f.kind == FeatureKind::numeric) {
      o["edges"] = f.edges;
      o["counts"] = f.counts;
      o["atoms"] = f.atoms;
    } else {
      o["categories"] = f.categories;
      o["category_counts"] = f.category_counts;
      o["other_count"] = f.other_count;
      o["exhaustive"] = f.exhaustive;
    }
    if (!f.noise.empty()) {
      json methods = json::object();
      for (const auto& m : f.noise.methods) methods[m.method] = {{"mean", m.mean}, {"sd", m.sd}};
      o["noise"] = {{"replicates", f.noise.replicates},
                    {"coarse_bins", f.noise.coarse_bins},
                    {"windows", f.noise.windows},
                    {"methods", std::move(methods)}};
    }
    feats.push_back(std::move(o));
  }
  j["features"] = std::move(feats);
  return j.dump(1);
}

namespace {

struct Reader {
  const std::string& origin;
  [[noreturn]] void fail(const std::string& where, const std::string& what) const {
    throw ProfileError(origin + ": " + where + ": " + what);
  }
  const json& field(const json& o, const char* key, const std::string& where) const {
    if (!o.is_object()) fail(where, "expected an object");
    auto it = o.find(key);
    if (it == o.end()) fail(where, std::string("missing field '") + key + "'");
    return *it;
  }
  std::uint64_t u64(const json& o, const char* key, const std::string& where) const {
    const json& v = field(o, key, where);
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<std::int64_t>() >= 0)) {
      fail(where + "." + key, "expected a non-negative integer");
    }
    return v.get<std::uint64_t>();
  }
  double num(const json& o, const char* key, const std::string& where) const {
    const json& v = field(o, key, where);
    if (!v.is_number()) fail(where + "." + key, "expected a number");
    const double d = v.get<double>();
    if (!std::isfinite(d)) fail(where + "." + key, "expected a finite number");
    return d;
  }
  std::string str(const json& o, const char* key, const std::string& where) const {
    const json& v = field(o, key, where);
    if (!v.is_string()) fail(where + "." + key, "expected a string");
    return v.get<std::string>();
  }
  bool boolean(const json& o, const char* key, const std::string& where) const {
    const json& v = field(o, key, where);
    if (!v.is_boolean()) fail(where + "." + key, "expected true or false");
    return v.get<bool>();
  }
  const json& array(const json& o, const char* key, const std::string& where, std::size_t max) const {
    const json& v = field(o, key, where);
    if (!v.is_array()) fail(where + "." + key, "expected an array");
    if (v.size() > max) fail(where + "." + key, "too many items (" + std::to_string(v.size()) + ")");
    return v;
  }
  std::vector<double> doubles(const json& o, const char* key, const std::string& where, std::size_t max) const {
    const json& a = array(o, key, where, max);
    std::vector<double> out;
    out.reserve(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!a[i].is_number() || !std::isfinite(a[i].get<double>())) {
        fail(where + "." + key + "[" + std::to_string(i) + "]", "expected a finite number");
      }
      out.push_back(a[i].get<double>());
    }
    return out;
  }
  std::vector<std::uint64_t> u64s(const json& o, const char* key, const std::string& where, std::size_t max) const {
    const json& a = array(o, key, where, max);
    std::vector<std::uint64_t> out;
    out.reserve(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!a[i].is_number_unsigned() && !(a[i].is_number_integer() && a[i].get<std::int64_t>() >= 0)) {
        fail(where + "." + key + "[" + std::to_string(i) + "]", "expected a non-negative integer");
      }
      out.push_back(a[i].get<std::uint64_t>());
    }
    return out;
  }
};

}  // namespace

ReferenceProfile profile_from_json_text(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw ProfileError(origin + ": not a valid profile (JSON): " + e.what());
  }
  Reader r{origin};
  if (!j.is_object()) r.fail("top level", "expected a JSON object");
  if (r.str(j, "format", "top level") != "mltap-profile") r.fail("format", "not an mltap profile");
  const std::uint64_t version = r.u64(j, "version", "top level");
  if (version < static_cast<std::uint64_t>(kMinProfileVersion) ||
      version > static_cast<std::uint64_t>(kProfileVersion)) {
    r.fail("version", "unsupported profile version " + std::to_string(version) + " (this build reads " +
                          std::to_string(kMinProfileVersion) + " to " + std::to_string(kProfileVersion) + ")");
  }
  ReferenceProfile p;
  p.version = static_cast<int>(version);
  const std::string layout = r.str(j, "layout", "top level");
  if (layout == "features") p.layout = ProfileLayout::features;
  else if (layout == "predictions") p.layout = ProfileLayout::predictions;
  else if (layout == "embeddings") p.layout = ProfileLayout::embeddings;
  else r.fail("layout", "must be features, predictions or embeddings; got '" + layout + "'");
  p.source = r.str(j, "source", "top level");
  p.created_unix_ns = r.u64(j, "created_unix_ns", "top level");
  p.dtype = r.str(j, "dtype", "top level");
  for (auto d : r.u64s(j, "row_shape", "top level", 6)) {
    if (d == 0 || d > kMaxEmbeddingDims) r.fail("row_shape", "dimension out of range");
    p.row_shape.push_back(static_cast<std::uint32_t>(d));
  }
  p.rows = r.u64(j, "rows", "top level");
  p.rank_error = r.num(j, "rank_error", "top level");
  p.class_threshold = r.num(j, "class_threshold", "top level");
  const json& cols = r.array(j, "columns", "top level", kMaxEmbeddingDims);
  for (std::size_t i = 0; i < cols.size(); ++i) {
    if (!cols[i].is_string()) r.fail("columns[" + std::to_string(i) + "]", "expected a string");
    p.columns.push_back(cols[i].get<std::string>());
  }
  const json& emb = r.field(j, "embedding", "top level");
  if (!emb.is_null()) {
    EmbeddingProfile e;
    const auto dims = r.u64(emb, "dims", "embedding");
    const auto proj = r.u64(emb, "projections", "embedding");
    if (dims == 0 || dims > kMaxEmbeddingDims) r.fail("embedding.dims", "out of range");
    if (proj == 0 || proj > 256) r.fail("embedding.projections", "out of range");
    e.dims = static_cast<std::uint32_t>(dims);
    e.projections = static_cast<std::uint32_t>(proj);
    e.seed = r.u64(emb, "seed", "embedding");
    e.mean = r.doubles(emb, "mean", "embedding", kMaxEmbeddingDims);
    e.total_variance = r.num(emb, "total_variance", "embedding");
    e.rows = r.u64(emb, "rows", "embedding");
    p.embedding = std::move(e);
  }
  const json& feats = r.array(j, "features", "top level", kMaxProfileFeatures);
  for (std::size_t i = 0; i < feats.size(); ++i) {
    const std::string w = "features[" + std::to_string(i) + "]";
    const json& o = feats[i];
    FeatureProfile f;
    f.name = r.str(o, "name", w);
    const std::string kind = r.str(o, "kind", w);
    if (kind == "numeric") f.kind = FeatureKind::numeric;
    else if (kind == "categorical") f.kind = FeatureKind::categorical;
    else r.fail(w + ".kind", "must be numeric or categorical; got '" + kind + "'");
    f.enabled = r.boolean(o, "enabled", w);
    f.values = r.u64(o, "values", w);
    f.nan = r.u64(o, "nan", w);
    f.pos_inf = r.u64(o, "pos_inf", w);
    f.neg_inf = r.u64(o, "neg_inf", w);
    f.finite = r.u64(o, "finite", w);
    f.mean = r.num(o, "mean", w);
    f.variance = r.num(o, "variance", w);
    f.min = r.num(o, "min", w);
    f.max = r.num(o, "max", w);
    f.integer_valued = r.boolean(o, "integer_valued", w);
    if (f.kind == FeatureKind::numeric) {
      f.edges = r.doubles(o, "edges", w, kMaxBins + 1);
      f.counts = r.u64s(o, "counts", w, kMaxBins);
      for (auto a : r.u64s(o, "atoms", w, kMaxBins)) {
        if (a > 1) r.fail(w + ".atoms", "expected 0 or 1");
        f.atoms.push_back(static_cast<std::uint8_t>(a));
      }
    } else {
      f.categories = r.doubles(o, "categories", w, kMaxCategories);
      f.category_counts = r.u64s(o, "category_counts", w, kMaxCategories);
      f.other_count = r.u64(o, "other_count", w);
      f.exhaustive = r.boolean(o, "exhaustive", w);
    }
    if (version >= 2 && o.contains("noise")) {
      const std::string nw = w + ".noise";
      const json& nz = r.field(o, "noise", w);
      f.noise.replicates = static_cast<std::uint32_t>(std::min<std::uint64_t>(r.u64(nz, "replicates", nw), 1u << 20));
      f.noise.coarse_bins = static_cast<std::uint32_t>(std::min<std::uint64_t>(r.u64(nz, "coarse_bins", nw), 1u << 20));
      f.noise.windows = r.u64s(nz, "windows", nw, 64);
      const json& ms = r.field(nz, "methods", nw);
      if (!ms.is_object()) r.fail(nw + ".methods", "expected an object");
      if (ms.size() > 16) r.fail(nw + ".methods", "too many methods");
      for (const auto& [name, mo] : ms.items()) {
        NoiseMethod m;
        m.method = name;
        m.mean = r.doubles(mo, "mean", nw + ".methods." + name, 64);
        m.sd = r.doubles(mo, "sd", nw + ".methods." + name, 64);
        f.noise.methods.push_back(std::move(m));
      }
    }
    p.features.push_back(std::move(f));
  }
  validate_profile(p, origin);
  return p;
}

void validate_profile(const ReferenceProfile& p, const std::string& origin) {
  auto fail = [&](const std::string& where, const std::string& what) {
    throw ProfileError(origin + ": " + where + ": " + what);
  };
  if (p.version < kMinProfileVersion || p.version > kProfileVersion) fail("version", "unsupported");
  if (!(p.rank_error >= 0 && p.rank_error <= 1)) fail("rank_error", "must be in [0, 1]");
  if (p.features.empty()) fail("features", "a profile needs at least one feature");
  if (p.features.size() > kMaxProfileFeatures) fail("features", "too many features");
  std::uint64_t prod = 1;
  for (auto d : p.row_shape) {
    prod *= d;
    if (prod > kMaxEmbeddingDims) fail("row_shape", "more than 65536 values per row");
  }
  std::set<std::string> names;
  for (const auto& n : p.columns) {
    if (n.empty() || n.size() > 256) fail("columns", "names must be 1..256 bytes");
    if (!names.insert(n).second) fail("columns", "duplicate name '" + n + "'");
  }
  switch (p.layout) {
    case ProfileLayout::features:
      if (p.columns.size() != p.features.size()) fail("columns", "must list one name per feature");
      if (p.embedding) fail("embedding", "only embeddings profiles have one");
      break;
    case ProfileLayout::predictions:
      if (p.columns.empty() || p.features.size() != p.columns.size() + 1) {
        fail("features", "a predictions profile has its columns plus the class feature");
      }
      if (p.features.back().kind != FeatureKind::categorical) fail("features", "the class feature must be categorical");
      if (p.embedding) fail("embedding", "only embeddings profiles have one");
      break;
    case ProfileLayout::embeddings: {
      if (!p.embedding) fail("embedding", "missing for an embeddings profile");
      const auto& e = *p.embedding;
      if (e.mean.size() > e.dims) fail("embedding.mean", "longer than dims");
      if (!(e.total_variance >= 0)) fail("embedding.total_variance", "must be >= 0");
      if (p.features.size() != 1 + static_cast<std::size_t>(e.projections)) {
        fail("features", "an embeddings profile has norm plus one feature per projection");
      }
      for (const auto& f : p.features) {
        if (f.kind != FeatureKind::numeric) fail("features", "embedding features are numeric");
      }
      break;
    }
  }
  if (!p.row_shape.empty() && p.layout != ProfileLayout::embeddings && prod != p.columns.size()) {
    fail("row_shape", "product differs from the number of columns");
  }
  if (!p.row_shape.empty() && p.layout == ProfileLayout::embeddings && prod != p.embedding->dims) {
    fail("row_shape", "product differs from embedding.dims");
  }
  std::set<std::string> fnames;
  for (std::size_t i = 0; i < p.features.size(); ++i) {
    const auto& f = p.features[i];
    const std::string w = "features[" + std::to_string(i) + "]";
    if (f.name.empty() || f.name.size() > 256) fail(w + ".name", "must be 1..256 bytes");
    if (!fnames.insert(f.name).second) fail(w + ".name", "duplicate feature '" + f.name + "'");
    if (f.nan + f.pos_inf + f.neg_inf + f.finite != f.values) fail(w, "nan + inf + finite != values");
    if (!(f.variance >= 0)) fail(w + ".variance", "must be >= 0");
    if (f.finite > 0 && !(f.min <= f.mean && f.mean <= f.max) &&
        std::fabs(f.mean - std::clamp(f.mean, f.min, f.max)) > 1e-9 * (1 + std::fabs(f.mean))) {
      fail(w, "mean outside [min, max]");
    }
    if (!f.noise.empty()) {
      const auto& nz = f.noise;
      for (std::size_t k = 0; k < nz.windows.size(); ++k) {
        if (nz.windows[k] == 0 || (k > 0 && nz.windows[k] <= nz.windows[k - 1])) {
          fail(w + ".noise.windows", "must be positive and increasing");
        }
      }
      for (const auto& m : nz.methods) {
        if (m.mean.size() != nz.windows.size() || m.sd.size() != nz.windows.size()) {
          fail(w + ".noise.methods." + m.method, "needs one mean and one sd per window size");
        }
        for (std::size_t k = 0; k < m.mean.size(); ++k) {
          if (!(m.mean[k] >= 0) || !(m.sd[k] >= 0)) fail(w + ".noise.methods." + m.method, "must be >= 0");
        }
      }
    }
    if (f.kind == FeatureKind::numeric) {
      if (f.edges.empty()) {
        if (!f.counts.empty() || !f.atoms.empty()) fail(w, "counts without edges");
        continue;
      }
      if (f.edges.size() < 2) fail(w + ".edges", "needs at least 2 edges");
      if (f.counts.size() != f.edges.size() - 1 || f.atoms.size() != f.counts.size()) {
        fail(w, "edges, counts and atoms sizes disagree");
      }
      for (std::size_t k = 1; k < f.edges.size(); ++k) {
        const bool ok = f.edges.size() == 2 ? f.edges[1] >= f.edges[0] : f.edges[k] > f.edges[k - 1];
        if (!ok) fail(w + ".edges", "must be strictly increasing (at index " + std::to_string(k) + ")");
      }
      std::uint64_t sum = 0;
      for (auto c : f.counts) {
        if (c > f.finite || sum > f.finite - c) fail(w + ".counts", "sum exceeds the finite values");
        sum += c;
      }
    } else {
      if (f.categories.size() != f.category_counts.size()) fail(w, "categories and counts sizes disagree");
      std::set<double> cats(f.categories.begin(), f.categories.end());
      if (cats.size() != f.categories.size()) fail(w + ".categories", "duplicate category");
      std::uint64_t sum = f.other_count;
      if (sum > f.finite) fail(w + ".other_count", "exceeds the finite values");
      for (auto c : f.category_counts) {
        if (c > f.finite || sum > f.finite - c) fail(w + ".category_counts", "sum exceeds the finite values");
        sum += c;
      }
    }
  }
}

void save_profile(const ReferenceProfile& profile, const std::string& path) {
  validate_profile(profile, path);
  const std::string text = profile_to_json_text(profile);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw ProfileError(path + ": cannot write (" + std::strerror(errno) + ")");
    out << text << '\n';
    out.flush();
    if (!out) throw ProfileError(path + ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw ProfileError(path + ": cannot replace (" + std::strerror(errno) + ")");
  }
}

ReferenceProfile load_profile(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw ProfileError(path + ": cannot read profile (" + std::strerror(errno) + ")");
  if (!S_ISREG(st.st_mode)) throw ProfileError(path + ": not a regular file");
  if (st.st_size > (1LL << 30)) throw ProfileError(path + ": profile larger than 1 GiB");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ProfileError(path + ": cannot read profile (" + std::strerror(errno) + ")");
  std::stringstream ss;
  ss << in.rdbuf();
  return profile_from_json_text(ss.str(), path);
}

}  // namespace mltap::detectors
