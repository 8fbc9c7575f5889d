// Mergeable, bounded-memory sketches used to fit reference bins from a stream.
//
// KllSketch: quantiles/ranks of a stream of doubles (Karnin, Lang, Liberty 2016). Memory is about
// 3k doubles whatever the stream length. Rank error (normalized, any single query) stays below
// kll_rank_error(k) = 2.25/k with probability >= 99% (measured in tests/detectors/test_sketches.cpp;
// k=200 -> 1.1%, k=256 -> 0.88%).
//
// FrequentItems: Misra-Gries summary of at most `capacity` distinct values. Every count is an
// underestimate by at most (n - retained_weight) / (capacity + 1) <= n / (capacity + 1);
// merging two summaries keeps that bound for the combined stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

namespace mltap::detectors {

// Documented 99%-confidence bound on the normalized rank error of KllSketch(k).
double kll_rank_error(std::uint32_t k) noexcept;

class KllSketch {
 public:
  explicit KllSketch(std::uint32_t k = 256, std::uint64_t seed = 0x9e3779b97f4a7c15ULL);

  // Non-finite values are ignored (callers count them separately).
  void update(double x) {
    if (!(x - x == 0)) return;  // NaN or Inf
    if (x < min_) min_ = x;
    if (x > max_) max_ = x;
    ++n_;
    levels_[0].push_back(x);
    if (++retained_ > capacity_total_) compress();
  }
  void merge(const KllSketch& other);

  std::uint64_t count() const noexcept { return n_; }
  std::uint32_t k() const noexcept { return k_; }
  double min() const noexcept { return min_; }
  double max() const noexcept { return max_; }
  // Fraction of items <= x (estimate).
  double rank(double x) const;
  // Smallest retained item whose weighted rank reaches q (0 -> min, 1 -> max).
  double quantile(double q) const;
  // Many quantiles at once (qs sorted ascending), one sort of the retained items.
  std::vector<double> quantiles(std::span<const double> qs) const;
  std::size_t retained() const noexcept { return retained_; }
  std::size_t memory_bytes() const noexcept;

 private:
  struct Weighted {
    double value;
    std::uint64_t weight;
  };
  std::vector<Weighted> sorted_view() const;
  std::uint32_t level_capacity(std::size_t level) const noexcept;
  void recompute_capacity() noexcept;
  void compress();
  bool coin() noexcept;

  std::uint32_t k_;
  std::uint64_t rng_;
  std::uint64_t n_ = 0;
  double min_ = std::numeric_limits<double>::infinity();
  double max_ = -std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> levels_;  // items of level h weigh 2^h
  std::size_t retained_ = 0;
  std::size_t capacity_total_ = 0;
};

class FrequentItems {
 public:
  struct Item {
    double value;
    std::uint64_t count;  // lower bound of the true count
  };
  explicit FrequentItems(std::uint32_t capacity = 64);

  void update(double value, std::uint64_t weight = 1);
  void merge(const FrequentItems& other);

  std::uint64_t total() const noexcept { return n_; }
  // Upper bound of the amount by which any count may be too low.
  std::uint64_t max_error() const noexcept;
  // True when no decrement ever happened: counts are exact and no value was lost.
  bool exact() const noexcept { return decremented_ == 0; }
  // Items by decreasing count, ties by value.
  std::vector<Item> items() const;
  std::uint64_t estimate(double value) const noexcept;
  std::uint32_t capacity() const noexcept { return capacity_; }
  std::size_t memory_bytes() const noexcept { return items_.capacity() * sizeof(Item); }

 private:
  void shrink_to(std::uint32_t keep);
  std::uint32_t capacity_;
  std::uint64_t n_ = 0;
  std::uint64_t decremented_ = 0;  // total weight removed by decrements
  std::vector<Item> items_;
};

}  // namespace mltap::detectors
