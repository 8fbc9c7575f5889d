#include "agent/detectors/fleet_bins.hpp"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <numeric>

namespace mltap::detectors {

namespace {

// FNV-1a over the bytes of the bins' definition: the label that keeps different bins apart.
struct Fnv {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  void add(std::uint64_t v) noexcept {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 0x100000001b3ULL;
    }
  }
  void add(double v) noexcept { add(std::bit_cast<std::uint64_t>(v == 0 ? 0.0 : v)); }
  std::string hex() const {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    return buf;
  }
};

void finish(FleetMap& m, const std::vector<std::uint64_t>& ref_counts, Fnv& id) {
  const double n = static_cast<double>(std::accumulate(ref_counts.begin(), ref_counts.end(), std::uint64_t{0}));
  const double k = static_cast<double>(ref_counts.size());
  m.reference_share.clear();
  for (auto c : ref_counts) {
    m.reference_share.push_back((static_cast<double>(c) + 0.5) / (n + 0.5 * k));
    id.add(static_cast<std::uint64_t>(c));
  }
  m.closed.assign(ref_counts.size(), 0);
  m.edges_id = id.hex();
}

}  // namespace

FleetMap compile_fleet_numeric(const FeatureProfile& f, const NumericReference& ref, std::uint32_t bins) {
  FleetMap m;
  const std::size_t fine = f.counts.size();
  if (bins < 2 || !ref.has_bins || fine == 0 || ref.lookup.bins() != fine || f.edges.size() != fine + 1) return m;
  bins = std::min(bins, kMaxFleetBins);
  std::uint64_t n = 0;
  for (auto c : f.counts) n += c;
  if (n == 0) return m;
  Fnv id;
  id.add(std::uint64_t{1});  // numeric
  // A cut after fine bin i when the cumulative count reaches the next k/bins target and some
  // reference mass remains above it (so no fleet bin is empty of reference values).
  std::vector<std::uint64_t> ref_counts(1, 0);
  std::vector<std::uint8_t> fine_bin(fine, 0);
  std::uint64_t cum = 0, target = 1;
  for (std::size_t i = 0; i < fine; ++i) {
    fine_bin[i] = static_cast<std::uint8_t>(ref_counts.size() - 1);
    cum += f.counts[i];
    ref_counts.back() += f.counts[i];
    if (cum * bins >= target * n && cum < n && ref_counts.size() < bins) {
      while (target * n <= cum * bins) ++target;
      id.add(f.edges[i + 1]);  // the cut
      ref_counts.push_back(0);
    }
  }
  m.bin_of.resize(fine + 2);
  m.bin_of[0] = 0;  // below the reference's minimum
  for (std::size_t i = 0; i < fine; ++i) m.bin_of[i + 1] = fine_bin[i];
  m.bin_of[fine + 1] = static_cast<std::uint8_t>(ref_counts.size() - 1);  // above its maximum
  id.add(f.edges.front());
  id.add(f.edges.back());
  finish(m, ref_counts, id);
  return m;
}

FleetMap compile_fleet_categorical(const CategoricalReference& ref, std::uint32_t bins) {
  FleetMap m;
  const std::size_t tracked = ref.categories.size();
  if (bins < 2 || ref.counts.size() != tracked + 1) return m;
  bins = std::min(bins, kMaxFleetBins);
  std::vector<std::size_t> order(tracked);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return ref.counts[a] > ref.counts[b]; });
  const std::size_t own = std::min<std::size_t>(bins - 1, tracked);
  Fnv id;
  id.add(std::uint64_t{2});  // categorical
  m.bin_of.assign(tracked + 1, static_cast<std::uint8_t>(own));
  std::vector<std::uint64_t> ref_counts(own + 1, 0);
  for (std::size_t j = 0; j < own; ++j) {
    m.bin_of[order[j]] = static_cast<std::uint8_t>(j);
    id.add(ref.categories[order[j]]);
  }
  for (std::size_t i = 0; i <= tracked; ++i) {
    ref_counts[m.bin_of[i]] += static_cast<std::uint64_t>(ref.counts[i]);
  }
  finish(m, ref_counts, id);
  return m;
}

void fleet_add(const FleetMap& m, const std::vector<std::uint32_t>& window_counts,
               std::vector<std::uint64_t>& out) noexcept {
  if (!m.active() || out.size() != m.reference_share.size()) return;
  const std::size_t n = std::min(window_counts.size(), m.bin_of.size());
  for (std::size_t i = 0; i < n; ++i) out[m.bin_of[i]] += window_counts[i];
}

}  // namespace mltap::detectors
