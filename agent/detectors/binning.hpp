// Compiled references and per-window accumulators. The reference's fine bins (quantiles of the
// reference) are the window "sketch": counting a value is one grid lookup plus a short,
// fixed-length search, and every statistic is computed from those counts at window close with a
// stated error bound (docs/detectors.md, "Error bounds").
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <vector>

#include "agent/detectors/profile.hpp"
#include "agent/detectors/sketches.hpp"

namespace mltap::detectors {

// Maps a finite value to a slot: 0 below the first edge, 1 + bin, bins + 1 above the last edge.
class BinLookup {
 public:
  BinLookup() = default;
  // edges: non-decreasing, finite, at least 2; strictly increasing unless exactly 2.
  explicit BinLookup(std::span<const double> edges);

  std::uint32_t bins() const noexcept { return bins_; }
  double lo() const noexcept { return lo_; }
  double hi() const noexcept { return hi_; }
  double edge(std::size_t i) const noexcept { return padded_[i]; }
  std::uint32_t search_steps() const noexcept { return std::bit_width(top_); }
  std::size_t memory_bytes() const noexcept {
    return padded_.capacity() * sizeof(double) + grid_.capacity() * sizeof(std::uint16_t);
  }

  // The grid cell of x in [lo, hi]; the constructor derives the grid with this same function,
  // so that the candidate bins of a cell are exact (no rounding slack).
  std::uint32_t cell_of(double x) const noexcept {
    const double t = (x - lo_) * scale_;  // >= 0; NaN only when the range overflows (scale 0)
    return t < static_cast<double>(cells_) ? static_cast<std::uint32_t>(t) : cells_ - 1;
  }

  // Asks for the edges and the grid in the cache ahead of slot() (see prefetch_feature).
  void prefetch() const noexcept {
    for (std::size_t i = 0; i < padded_.size(); i += 8) __builtin_prefetch(padded_.data() + i);
    for (std::size_t i = 0; i < grid_.size(); i += 32) __builtin_prefetch(grid_.data() + i);
  }

  std::uint32_t slot(double x) const noexcept {
    if (x < lo_) return 0;
    if (x > hi_) return bins_ + 1;
    std::uint32_t b = grid_[cell_of(x)];
    const double* e = padded_.data();
    for (std::uint32_t half = top_; half; half >>= 1) b = e[b + half] <= x ? b + half : b;
    return (b < bins_ ? b : bins_ - 1) + 1;
  }

 private:
  std::uint32_t bins_ = 0;
  std::uint32_t cells_ = 1;
  std::uint32_t top_ = 0;  // largest step of the search within a grid cell (power of two or 0)
  double lo_ = 0, hi_ = 0, scale_ = 0;
  std::vector<double> padded_;        // edges then +inf padding for the search
  std::vector<std::uint16_t> grid_;   // first candidate bin per cell
};

// Fast exact-match table for categorical values (double bit patterns; -0 == +0).
class CategoryLookup {
 public:
  CategoryLookup() = default;
  explicit CategoryLookup(std::span<const double> categories);
  static constexpr std::uint32_t kMissing = 0xffffffffu;
  std::uint32_t find(double x) const noexcept {
    if (mask_ == 0) return kMissing;
    const std::uint64_t key = bits(x);
    std::size_t i = hash(key) & mask_;
    while (true) {
      const Slot& s = table_[i];
      if (s.index == kMissing) return kMissing;
      if (s.key == key) return s.index;
      i = (i + 1) & mask_;
    }
  }
  std::size_t size() const noexcept { return count_; }
  std::size_t memory_bytes() const noexcept { return table_.capacity() * sizeof(Slot); }

 private:
  struct Slot {
    std::uint64_t key;
    std::uint32_t index;
  };
  static std::uint64_t bits(double x) noexcept { return std::bit_cast<std::uint64_t>(x == 0 ? 0.0 : x); }
  static std::size_t hash(std::uint64_t k) noexcept { return static_cast<std::size_t>((k * 0x9E3779B97F4A7C15ULL) >> 32); }
  std::vector<Slot> table_;
  std::size_t mask_ = 0;
  std::size_t count_ = 0;
};

// ---- numeric -------------------------------------------------------------------------------

struct NumericReference {
  BinLookup lookup;
  // bins+1: reference values below edge k (below[0] = 0, below[bins] = n), exact; a reference of
  // more than 2^32 - 1 values is rescaled to that total (its rank_error grows by 1/n).
  std::vector<std::uint32_t> below;
  std::vector<std::uint8_t> atoms;  // bins
  std::uint32_t coarse = 0;         // coarse bins (fine bins grouped, see coarse_of)
  std::uint32_t coarse_target = 1;
  double n = 0;                     // reference values in bins
  double mean = 0, sd = 0, min = 0, max = 0;
  double nan_rate = 0, inf_rate = 0;
  double rank_error = 0;
  bool has_bins = false;            // false: the reference had no finite value
  // Reference share below edge k.
  double cum(std::size_t k) const noexcept { return static_cast<double>(below[k]) / n; }
  // Calls fn(fine bin, coarse bin 1..coarse) for every fine bin in order: fine bins are grouped
  // by the reference share at their middle (computed, not stored: it is per window close only).
  template <class Fn>
  void for_each_coarse(Fn&& fn) const {
    const std::uint32_t bins = lookup.bins();
    std::int64_t last_group = -1;
    std::uint32_t next = 0;
    for (std::uint32_t i = 0; i < bins; ++i) {
      const double mid = 0.5 * (cum(i) + cum(i + 1));
      const auto g = std::min<std::int64_t>(coarse_target - 1, static_cast<std::int64_t>(mid * coarse_target));
      if (g != last_group) {
        ++next;
        last_group = g;
      }
      fn(i, next);
    }
  }
  // The coarse+2 reference counts (slot 0 below, last above: 0), derived from `below` when a
  // window is scored rather than kept (168 bytes a feature).
  void coarse_reference(std::vector<double>& out) const;
  std::size_t memory_bytes() const noexcept;
};
// coarse_bins: target number of equal-mass coarse bins (PSI/JS/Hellinger).
NumericReference compile_numeric(const FeatureProfile& f, std::uint32_t coarse_bins, double rank_error);

struct NumericWindow {
  std::vector<std::uint32_t> counts;  // bins + 2 slots
  std::uint64_t values = 0, nan = 0, pos_inf = 0, neg_inf = 0, finite = 0;
  double sum = 0, sumsq = 0;          // of (x - reference mean)
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  double under_sum = 0, over_sum = 0; // sum of distances beyond the reference range
  double block_sum = 0;               // of (x - reference mean) in the current sequential block
  std::uint64_t block_n = 0;
  void reset(std::uint32_t bins);
  std::uint64_t out_of_range() const noexcept {
    return counts.empty() ? finite : counts.front() + counts.back();
  }
  double mean(double shift) const noexcept { return finite ? shift + sum / static_cast<double>(finite) : NAN; }
  double sd() const noexcept;
  std::size_t memory_bytes() const noexcept { return counts.capacity() * sizeof(std::uint32_t); }
};

// Hot path: n values at stride `stride`.
void add_numeric(const NumericReference& ref, NumericWindow& w, const double* v, std::size_t n,
                 std::size_t stride) noexcept;

struct NumericScores {
  double wasserstein = NAN;        // W1 / reference sd
  double wasserstein_bound = NAN;  // max error of the binned W1, same units
  double ks = NAN;                 // binned KS statistic (a lower bound of the exact one)
  double ks_bound = NAN;           // exact KS <= ks + ks_bound
  double ks_p_value = NAN;         // conservative (computed from the lower bound); NaN if n too large
  double psi = NAN, js = NAN, hellinger = NAN;  // on coarse bins + 2 overflow bins
  double n_eff = 0;
};
NumericScores compare_numeric(const NumericReference& ref, const NumericWindow& cur, double p_value_max_n);
// The closed window `cur` becomes `prev`, kept on the coarse bins only (coarse + 2 slots; its
// moments whole), so that the previous window costs ~20 counts, not one per fine bin; `cur` is
// reset for the next window (its sequential block carried over).
void roll_numeric_window(const NumericReference& ref, NumericWindow& cur, NumericWindow& prev);
// Window vs previous window (kept by roll_numeric_window) on the coarse bins: KS and W1 on the
// coarse grid (W1 of the overflow parts approximated by means), PSI/JS/Hellinger as usual.
NumericScores compare_numeric_windows(const NumericReference& ref, const NumericWindow& prev,
                                      const NumericWindow& cur);

// Two windows both on the fine bins (a bootstrap's reference draw against a window draw:
// noise.cpp): KS and W1 on the fine grid, PSI/JS/Hellinger on the coarse bins.
NumericScores compare_fine_windows(const NumericReference& ref, const NumericWindow& a,
                                   const NumericWindow& b);

// ---- categorical ---------------------------------------------------------------------------

struct CategoricalReference {
  CategoryLookup lookup;
  std::vector<double> categories;
  std::vector<std::uint32_t> order;  // tracked categories by increasing value (for KS)
  std::vector<double> counts;  // tracked + other (last)
  double n = 0;
  bool exhaustive = true;
  double nan_rate = 0, inf_rate = 0;
  double mean = 0, sd = 0;
  std::size_t memory_bytes() const noexcept;
};
CategoricalReference compile_categorical(const FeatureProfile& f);

struct CategoricalWindow {
  std::vector<std::uint32_t> counts;  // tracked + other
  std::uint64_t values = 0, nan = 0, pos_inf = 0, neg_inf = 0, finite = 0;
  double sum = 0, sumsq = 0, min = INFINITY, max = -INFINITY;
  FrequentItems unseen{8};            // most frequent values not tracked by the reference
  void reset(std::size_t tracked);
  std::size_t memory_bytes() const noexcept {
    return counts.capacity() * sizeof(std::uint32_t) + unseen.memory_bytes();
  }
};
void add_categorical(const CategoricalReference& ref, CategoricalWindow& w, const double* v,
                     std::size_t n, std::size_t stride) noexcept;

struct CategoricalScores {
  double linf = NAN, js = NAN, psi = NAN;
  // KS of the values' empirical CDFs (categories are numbers): exact (ks_bound 0) when every
  // value of both sides is known, i.e. the reference pooled nothing as "other" and the window's
  // unseen values fit its summary; otherwise exact <= ks + ks_bound.
  double ks = NAN, ks_bound = NAN;
  double chi2 = NAN, chi2_p_value = NAN, cramers_v = NAN;
  double unseen_share = NAN;   // share of window values not among tracked categories
  double ref_other_share = NAN;
  double missing_share = NAN;  // reference share of categories absent from the window (expected >= 20)
  std::size_t largest_change = 0;  // index of the category with the largest |share change|
  double n_eff = 0;
};
CategoricalScores compare_categorical(const CategoricalReference& ref, const CategoricalWindow& cur,
                                      double p_value_max_n);
// Two-sample KS statistic of value counts over the tracked categories (ref.order), with extra
// window values (value, count) not among them; `unknown` is the share of either side whose
// values are unknown (pooled), returned as the bound.
double categorical_ks(const CategoricalReference& ref, std::span<const double> ref_counts,
                      std::span<const double> cur_counts,
                      std::span<const FrequentItems::Item> cur_extra) noexcept;
CategoricalScores compare_categorical_windows(const CategoricalReference& ref,
                                              const CategoricalWindow& prev,
                                              const CategoricalWindow& cur);

// ---- two-phase pinned reference builder (see profile.hpp) -----------------------------------

struct PinnedOptions {
  std::uint32_t bins = 256;
  std::uint32_t categorical_max_distinct = 64;
  std::uint32_t max_categories = 64;
  std::optional<core::FeatureKind> forced_kind;
  std::uint32_t kll_k = 256;
};

class PinnedFeatureBuilder {
 public:
  explicit PinnedFeatureBuilder(const PinnedOptions& options);
  void add(const double* v, std::size_t n, std::size_t stride);
  // Ends phase A: fits bins and decides the kind. Later values are counted exactly.
  void fit();
  bool fitted() const noexcept { return fitted_; }
  FeatureProfile finish(std::string name);
  std::size_t memory_bytes() const noexcept;

 private:
  void add_moments(double x) noexcept;
  PinnedOptions opt_;
  bool fitted_ = false;
  // both phases
  std::uint64_t values_ = 0, nan_ = 0, pos_inf_ = 0, neg_inf_ = 0, finite_ = 0;
  bool have_shift_ = false;
  double shift_ = 0, sum_ = 0, sumsq_ = 0, min_ = INFINITY, max_ = -INFINITY;
  bool integer_valued_ = true;
  // phase A
  KllSketch kll_;
  FrequentItems items_;
  // phase B
  core::FeatureKind kind_ = core::FeatureKind::numeric;
  std::vector<double> edges_;
  BinLookup lookup_;
  std::vector<std::uint64_t> counts_;     // bins + 2 slots
  std::vector<std::uint8_t> not_atom_;    // bins
  double under_min_ = INFINITY, under_max_ = -INFINITY, over_min_ = INFINITY, over_max_ = -INFINITY;
  std::vector<double> categories_;
  CategoryLookup cat_lookup_;
  std::vector<std::uint64_t> cat_counts_;  // tracked + other
  bool exhaustive_ = true;
};

}  // namespace mltap::detectors
