// Fleet bins: a few coarse bins per feature, derived only from the reference profile, so that
// every host configured with the same profile file counts values into identical bins and
// Prometheus can sum the counts across hosts (docs/metrics.md, "Fleet"). Counting reuses the
// window's fine-bin counts: a fleet bin is a run of fine bins, so nothing is added to the hot path.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agent/detectors/binning.hpp"
#include "agent/detectors/profile.hpp"

namespace mltap::detectors {

inline constexpr std::uint32_t kMaxFleetBins = 32;

struct FleetMap {
  std::vector<std::uint8_t> bin_of;      // fleet bin of each window slot
  std::vector<double> reference_share;   // (count + 0.5) / (n + 0.5 K): the engine's PSI smoothing
  std::vector<std::uint64_t> closed;     // values counted in closed windows, per fleet bin
  std::string edges_id;                  // hash of the bins' definition and reference shares
  bool active() const noexcept { return !reference_share.empty(); }
  std::size_t memory_bytes() const noexcept {
    return bin_of.capacity() + reference_share.capacity() * sizeof(double) +
           closed.capacity() * sizeof(std::uint64_t) + edges_id.capacity();
  }
};

// Numeric: at most `bins` bins of about equal reference share, cut at fine-bin edges where the
// reference's cumulative count crosses k/bins (integer arithmetic: the same cut on every host);
// values below the reference's minimum count in the first bin, above its maximum in the last.
// Inactive (empty) when the profile has no finite value.
FleetMap compile_fleet_numeric(const FeatureProfile& f, const NumericReference& ref, std::uint32_t bins);
// Categorical: the bins-1 most frequent reference categories (ties: the profile's order) have a
// bin each; every other value (other tracked categories, unseen values) counts in the last bin.
FleetMap compile_fleet_categorical(const CategoricalReference& ref, std::uint32_t bins);
// out[b] += window counts of the slots of fleet bin b (out sized to the bins).
void fleet_add(const FleetMap& m, const std::vector<std::uint32_t>& window_counts,
               std::vector<std::uint64_t>& out) noexcept;

}  // namespace mltap::detectors
