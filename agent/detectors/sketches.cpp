#include "agent/detectors/sketches.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace mltap::detectors {

double kll_rank_error(std::uint32_t k) noexcept {
  // Measured: the maximum rank error over 99 queries has its 99th percentile at ~1.65/k over
  // random, ascending, descending and heavy-tailed inputs (test_sketches.cpp); small k pays
  // for the minimum compactor width, hence the margin.
  return 2.25 / static_cast<double>(std::max<std::uint32_t>(k, 8));
}

KllSketch::KllSketch(std::uint32_t k, std::uint64_t seed) : k_(std::max<std::uint32_t>(k, 8)), rng_(seed | 1) {
  levels_.emplace_back();
  recompute_capacity();
}

bool KllSketch::coin() noexcept {
  rng_ ^= rng_ << 13;
  rng_ ^= rng_ >> 7;
  rng_ ^= rng_ << 17;
  return (rng_ >> 32) & 1;
}

std::uint32_t KllSketch::level_capacity(std::size_t level) const noexcept {
  const std::size_t depth = levels_.size() - 1 - level;  // top level has the full k
  const double cap = std::ceil(static_cast<double>(k_) * std::pow(2.0 / 3.0, static_cast<double>(depth)));
  return std::max<std::uint32_t>(8, static_cast<std::uint32_t>(cap));
}

void KllSketch::recompute_capacity() noexcept {
  capacity_total_ = 0;
  for (std::size_t h = 0; h < levels_.size(); ++h) capacity_total_ += level_capacity(h);
}

void KllSketch::compress() {
  for (std::size_t h = 0; h < levels_.size(); ++h) {
    if (levels_[h].size() < level_capacity(h)) continue;
    if (h + 1 == levels_.size()) {
      levels_.emplace_back();
      recompute_capacity();
    }
    auto& lv = levels_[h];
    std::sort(lv.begin(), lv.end());
    // An odd item stays behind so that weights stay exact.
    std::size_t start = lv.size() % 2;
    const std::size_t offset = coin() ? 1 : 0;
    auto& up = levels_[h + 1];
    for (std::size_t i = start + offset; i < lv.size(); i += 2) up.push_back(lv[i]);
    retained_ -= (lv.size() - start) / 2;
    lv.resize(start);
    // Keep memory near the retained items: vectors that grew past twice their level's capacity
    // (the first level before the sketch grew taller, merges) give the space back.
    if (lv.capacity() > 2 * static_cast<std::size_t>(level_capacity(h))) lv.shrink_to_fit();
    if (retained_ <= capacity_total_) break;
  }
}

void KllSketch::merge(const KllSketch& other) {
  if (other.n_ == 0) return;
  while (levels_.size() < other.levels_.size()) levels_.emplace_back();
  recompute_capacity();
  for (std::size_t h = 0; h < other.levels_.size(); ++h) {
    levels_[h].insert(levels_[h].end(), other.levels_[h].begin(), other.levels_[h].end());
    retained_ += other.levels_[h].size();
  }
  n_ += other.n_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
  while (retained_ > capacity_total_) {
    const std::size_t before = retained_;
    compress();
    if (retained_ == before) break;
  }
}

std::vector<KllSketch::Weighted> KllSketch::sorted_view() const {
  std::vector<Weighted> all;
  all.reserve(retained_);
  for (std::size_t h = 0; h < levels_.size(); ++h) {
    for (double v : levels_[h]) all.push_back({v, std::uint64_t{1} << h});
  }
  std::sort(all.begin(), all.end(), [](const Weighted& a, const Weighted& b) { return a.value < b.value; });
  return all;
}

double KllSketch::rank(double x) const {
  if (n_ == 0) return NAN;
  std::uint64_t below = 0, total = 0;
  for (std::size_t h = 0; h < levels_.size(); ++h) {
    const std::uint64_t w = std::uint64_t{1} << h;
    for (double v : levels_[h]) {
      total += w;
      if (v <= x) below += w;
    }
  }
  return total ? static_cast<double>(below) / static_cast<double>(total) : NAN;
}

std::vector<double> KllSketch::quantiles(std::span<const double> qs) const {
  std::vector<double> out(qs.size(), NAN);
  if (n_ == 0) return out;
  const auto all = sorted_view();
  std::uint64_t total = 0;
  for (const auto& w : all) total += w.weight;
  std::size_t i = 0;
  std::uint64_t cum = 0;
  for (std::size_t j = 0; j < qs.size(); ++j) {
    const double q = std::clamp(qs[j], 0.0, 1.0);
    if (q <= 0) { out[j] = min_; continue; }
    if (q >= 1) { out[j] = max_; continue; }
    const double target = q * static_cast<double>(total);
    while (i < all.size() && static_cast<double>(cum + all[i].weight) < target) cum += all[i++].weight;
    out[j] = i < all.size() ? all[i].value : max_;
  }
  return out;
}

double KllSketch::quantile(double q) const {
  const double qs[1] = {q};
  return quantiles(qs)[0];
}

std::size_t KllSketch::memory_bytes() const noexcept {
  std::size_t b = sizeof(*this) + levels_.capacity() * sizeof(std::vector<double>);
  for (const auto& lv : levels_) b += lv.capacity() * sizeof(double);
  return b;
}

// ---------------------------------------------------------------------------------------------

// Nothing reserved: most windows never see a value outside the tracked categories.
FrequentItems::FrequentItems(std::uint32_t capacity) : capacity_(std::max<std::uint32_t>(capacity, 1)) {}

void FrequentItems::update(double value, std::uint64_t weight) {
  if (weight == 0) return;
  n_ += weight;
  for (auto& it : items_) {
    if (it.value == value) {
      it.count += weight;
      return;
    }
  }
  items_.push_back({value, weight});
  if (items_.size() > capacity_) shrink_to(capacity_);
}

// Subtracts the (keep+1)-th largest count from every item and drops those at or below zero:
// the Misra-Gries decrement, generalized for weights and merges.
void FrequentItems::shrink_to(std::uint32_t keep) {
  if (items_.size() <= keep) return;
  std::vector<std::uint64_t> counts;
  counts.reserve(items_.size());
  for (const auto& it : items_) counts.push_back(it.count);
  std::nth_element(counts.begin(), counts.begin() + keep, counts.end(), std::greater<>());
  const std::uint64_t cut = counts[keep];
  std::vector<Item> kept;
  kept.reserve(capacity_ + 1);
  std::uint64_t removed = 0;
  for (const auto& it : items_) {
    if (it.count > cut) {
      kept.push_back({it.value, it.count - cut});
      removed += cut;
    } else {
      removed += it.count;
    }
  }
  decremented_ += removed;
  items_.swap(kept);
}

void FrequentItems::merge(const FrequentItems& other) {
  for (const auto& o : other.items_) {
    bool found = false;
    for (auto& it : items_) {
      if (it.value == o.value) {
        it.count += o.count;
        found = true;
        break;
      }
    }
    if (!found) items_.push_back(o);
  }
  n_ += other.n_;
  decremented_ += other.decremented_;
  shrink_to(capacity_);
}

std::uint64_t FrequentItems::max_error() const noexcept {
  // Each decrement step removes (capacity+1) units of weight and lowers a count by at most one
  // unit; so a count is low by at most removed / (capacity + 1).
  return decremented_ / (capacity_ + 1) + (decremented_ % (capacity_ + 1) ? 1 : 0);
}

std::vector<FrequentItems::Item> FrequentItems::items() const {
  auto out = items_;
  std::sort(out.begin(), out.end(), [](const Item& a, const Item& b) {
    return a.count != b.count ? a.count > b.count : a.value < b.value;
  });
  return out;
}

std::uint64_t FrequentItems::estimate(double value) const noexcept {
  for (const auto& it : items_) {
    if (it.value == value) return it.count;
  }
  return 0;
}

}  // namespace mltap::detectors
