// The reference's own sampling noise, per feature and decision method: how large each drift
// score gets when the reference and a window come from the same population, for the reference's
// size and a grid of window sizes. A method decides drift only above max(threshold, noise floor)
// (docs/detectors.md, "Noise floor and minimum detectable effect").
//
// Estimated by a parametric bootstrap from the profile alone (its bins or category counts), so
// that offline builds, pinned references and version-1 profiles get the same estimate.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "agent/detectors/profile.hpp"

namespace mltap::detectors {

struct NoiseOptions {
  std::uint32_t replicates = 64;
  std::uint32_t coarse_bins = 16;  // as the engine's drift.coarse_bins
  std::uint64_t seed = 0x6e6f697365ULL;
  std::vector<std::uint64_t> windows{1000, 5000, 50000, 1000000};
  // estimate_profile_noise: one helper thread takes every other feature. The estimates are the
  // same either way (each feature has its own seed); it halves the time on two cores, which at
  // 1,000 streams pinning together is time the ingest thread reads no ring (docs/benchmarks.md,
  // "the pinning stall").
  bool helper_thread = true;
};

// Methods estimated per kind (every method that can be configured to decide).
inline constexpr std::string_view kNumericNoiseMethods[] = {"wasserstein", "psi", "ks", "js", "hellinger"};
inline constexpr std::string_view kCategoricalNoiseMethods[] = {"linf", "js", "psi", "ks"};

// Every method name either list holds (NoiseTable keeps an index into it).
inline constexpr std::string_view kNoiseMethodNames[] = {"wasserstein", "psi", "ks", "js", "hellinger", "linf"};

// Bootstrap estimate for one feature (numeric: its fine bins; categorical: its value counts). The
// seed is mixed with the feature's name so that features get independent replicates. Returns an
// empty estimate when the feature has no finite reference value.
NoiseEstimate estimate_noise(const FeatureProfile& f, const NoiseOptions& options);
// Fills `noise` of every enabled feature of the profile.
void estimate_profile_noise(ReferenceProfile& p, const NoiseOptions& options);

// Mean and sd of a method's score for a reference of n_ref values and a window of n_window
// values: linear in 1/sqrt(n_eff) (n_eff = n_ref n_window / (n_ref + n_window)) between the
// estimated window sizes, proportional to it below the smallest and flat beyond the largest.
// PSI's are on the square-root scale. False when the method was not estimated.
struct NoiseMoments {
  double mean = 0, sd = 0;
};
bool noise_moments(const NoiseEstimate& e, std::string_view method, double n_ref, double n_window,
                   NoiseMoments& out) noexcept;

// The engine's per-feature copy of a NoiseEstimate (issue 12: per-stream state that does not
// depend on the reference's source): a fixed table of floats held inline, about 190 bytes instead
// of ~750 bytes of vectors and method names. Floats keep 7 significant digits of a floor that is
// itself a bootstrap estimate (64 replicates: a few percent). A profile with more than kWindows
// window sizes keeps kWindows of them spread evenly over its list, first and last included (the
// interpolation between them stays linear in 1/sqrt(n_eff)); this engine's own estimates have 4.
class NoiseTable {
 public:
  static constexpr std::size_t kWindows = 4;
  static constexpr std::size_t kMethods = 5;  // per feature kind (kNumericNoiseMethods: 5)
  NoiseTable() = default;
  explicit NoiseTable(const NoiseEstimate& e) noexcept;
  bool empty() const noexcept { return windows_ == 0; }
  bool moments(std::string_view method, double n_ref, double n_window, NoiseMoments& out) const noexcept;

 private:
  std::array<float, kWindows> window_{};
  std::array<std::array<float, kWindows>, kMethods> mean_{}, sd_{};
  std::array<std::uint8_t, kMethods> method_{};  // index in kNoiseMethodNames + 1; 0 = unused
  std::uint8_t windows_ = 0;
};
// The noise floor of a method: mean + z sd (squared for PSI).
double noise_floor(const NoiseMoments& m, std::string_view method, double z) noexcept;

}  // namespace mltap::detectors
