// Distances, tests and multiple-testing rules on discrete distributions (bins or categories).
// Conventions match scipy where a scipy function exists (jensenshannon with base=2,
// chi2_contingency, kstwo/kolmogorov); docs/detectors.md states each formula.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace mltap::detectors {

// (count + alpha) / (n + alpha * K): the explicit empty-bin rule for PSI (alpha = 0.5).
std::vector<double> smoothed_probabilities(std::span<const double> counts, double alpha);
// Counts divided by their sum; all zeros when the sum is zero.
std::vector<double> normalized(std::span<const double> counts);

// Population stability index: sum (q - p) ln(q / p). p, q must be strictly positive (smoothed).
double psi(std::span<const double> p, std::span<const double> q) noexcept;
// Jensen-Shannon distance, base 2, in [0, 1]; zeros allowed.
double js_distance(std::span<const double> p, std::span<const double> q) noexcept;
// Hellinger distance sqrt(1 - sum sqrt(p q)), in [0, 1].
double hellinger(std::span<const double> p, std::span<const double> q) noexcept;
// max |p - q|.
double linf(std::span<const double> p, std::span<const double> q) noexcept;

struct ChiSquared {
  double statistic = 0;
  double dof = 0;
  double p_value = 1;
  double cramers_v = 0;
  bool valid = false;  // enough expected counts (Cochran) for the p-value to mean something
};
// Two-row contingency (reference counts, current counts) over the same cells. Cells with a zero
// total are dropped; Yates' correction when dof == 1 (as scipy.stats.chi2_contingency).
ChiSquared chi_squared_2xk(std::span<const double> ref_counts, std::span<const double> cur_counts);

// Upper tail of the chi-squared distribution.
double chi2_sf(double x, double dof) noexcept;
// Asymptotic two-sample Kolmogorov-Smirnov p-value with Stephens' small-sample correction,
// effective n = n*m/(n+m).
double ks_p_value(double d, double n, double m) noexcept;

// Benjamini-Hochberg at level q. NaN p-values are not tests (never rejected, not counted in m).
std::vector<bool> benjamini_hochberg(std::span<const double> p_values, double q);

// ---- Sequential change detection on standardized block means (z ~ N(0,1) without change) ----

// Threshold h for a two-sided CUSUM with reference value k such that the average run length
// between false alarms is `arl` blocks (Siegmund's approximation, solved numerically).
double cusum_threshold(double arl_blocks, double k) noexcept;
// Siegmund's ARL of a one-sided CUSUM (k, h) on N(0,1) increments.
double cusum_arl_one_sided(double k, double h) noexcept;

// The same for increments u - k where u has mean 0 and variance 1 but any distribution, given as
// weighted points (weights summing to 1): theta is the root > 0 of E[exp(theta (u - k))] = 1
// (the exponential tilt; 2k for N(0,1)), and ARL ~ (e^{theta b} - theta b - 1) / (theta k) with
// b = h + 1.166, which is Siegmund's formula when theta = 2k. Returns 2k when no root is found
// (u bounded above by k, or the points are empty).
double cusum_tilt(std::span<const double> u, std::span<const double> w, double k) noexcept;
double cusum_arl_one_sided_tilted(double theta, double k, double h) noexcept;
// Smallest h with cusum_arl_one_sided_tilted(theta, k, h) >= arl.
double cusum_threshold_tilted(double arl, double theta, double k) noexcept;

// A two-sided CUSUM chart on standardized values (mean 0, sd 1 without change): S+ and S- with
// reference value k, alarm when S+ > h_up or S- > h_down, then restart at zero. It remembers the
// record at which the alarming side last left zero: the maximum-likelihood change point of a
// CUSUM (Page), i.e. the onset estimate of the change it alarmed on.
class Cusum {
 public:
  Cusum() = default;
  Cusum(double k, double h) : k_(k), h_up_(h), h_dn_(h) {}
  Cusum(double k, double h_up, double h_down) : k_(k), h_up_(h_up), h_dn_(h_down) {}
  // Returns true on alarm (statistics restart at zero after an alarm). `record`: the index of the
  // value in its stream, kept for the onset and alarm records.
  bool update(double z, std::uint64_t record = 0) noexcept {
    if (hi_ == 0) hi_start_ = record;
    if (lo_ == 0) lo_start_ = record;
    // Same operations as advance_all, so that both paths round alike.
    const double up = hi_ + (z - k_), down = lo_ - (z + k_);
    hi_ = up > 0 ? up : 0;
    lo_ = down > 0 ? down : 0;
    if (hi_ > h_up_ || lo_ > h_dn_) {
      last_up_ = hi_ / h_up_ >= lo_ / h_dn_;
      alarm_score_ = last_up_ ? hi_ : lo_;
      alarm_threshold_ = last_up_ ? h_up_ : h_dn_;
      alarm_record_ = record;
      onset_record_ = last_up_ ? hi_start_ : lo_start_;
      hi_ = lo_ = 0;
      return true;
    }
    return false;
  }
  double score() const noexcept { return hi_ > lo_ ? hi_ : lo_; }  // compare with threshold()
  double threshold() const noexcept { return h_up_ > h_dn_ ? h_up_ : h_dn_; }
  // max(S+/h_up, S-/h_down): 1 at the alarm.
  double ratio() const noexcept { return hi_ / h_up_ > lo_ / h_dn_ ? hi_ / h_up_ : lo_ / h_dn_; }
  double k() const noexcept { return k_; }
  double threshold_up() const noexcept { return h_up_; }
  double threshold_down() const noexcept { return h_dn_; }
  bool last_alarm_up() const noexcept { return last_up_; }
  double alarm_score() const noexcept { return alarm_score_; }  // statistic when it last alarmed
  double alarm_threshold() const noexcept { return alarm_threshold_; }
  std::uint64_t alarm_record() const noexcept { return alarm_record_; }
  // The record at which the alarming side last left zero (its last reset): the change-point
  // estimate of the last alarm.
  std::uint64_t onset_record() const noexcept { return onset_record_; }
  // The same for the run in progress (the larger side), valid while score() > 0.
  std::uint64_t current_onset_record() const noexcept { return hi_ / h_up_ >= lo_ / h_dn_ ? hi_start_ : lo_start_; }
  void reset() noexcept { hi_ = lo_ = 0; }

  // The engine's fast path: advances every chart over u[0..n) (records rec[i]) and returns true
  // when none of them alarms on any of these values; otherwise leaves every chart as it was and
  // returns false (step with update() then). Branch-free: whether S+ or S- sits at zero is a coin
  // flip under no change, which a branch per value would mispredict.
  static bool advance_all(std::span<Cusum> charts, const double* u, const std::uint64_t* rec,
                          std::size_t n) noexcept;

 private:
  template <std::size_t M>
  static bool advance_fixed(Cusum* charts, const double* u, const std::uint64_t* rec, std::size_t n) noexcept;

  double k_ = 0.5, h_up_ = 5, h_dn_ = 5;
  double hi_ = 0, lo_ = 0, alarm_score_ = 0, alarm_threshold_ = 0;
  std::uint64_t hi_start_ = 0, lo_start_ = 0, alarm_record_ = 0, onset_record_ = 0;
  bool last_up_ = false;
};

// Page-Hinkley: cumulative deviation from the running mean since the last reset, minus delta;
// alarm when it rises lambda above its running minimum (two-sided).
class PageHinkley {
 public:
  PageHinkley() = default;
  PageHinkley(double delta, double lambda) : delta_(delta), lambda_(lambda) {}
  bool update(double z) noexcept {
    ++n_;
    mean_ += (z - mean_) / static_cast<double>(n_);
    up_ += z - mean_ - delta_;
    dn_ += mean_ - z - delta_;
    if (up_ < up_min_) up_min_ = up_;
    if (dn_ < dn_min_) dn_min_ = dn_;
    if (up_ - up_min_ > lambda_ || dn_ - dn_min_ > lambda_) {
      last_up_ = up_ - up_min_ > lambda_;
      alarm_score_ = score();
      reset();
      return true;
    }
    return false;
  }
  double score() const noexcept {
    const double a = up_ - up_min_, b = dn_ - dn_min_;
    return a > b ? a : b;
  }
  // The one-sided statistics above their running minimum (0 at the minimum; onset as for Cusum).
  double upper() const noexcept { return up_ - up_min_; }
  double lower() const noexcept { return dn_ - dn_min_; }
  double threshold() const noexcept { return lambda_; }
  bool last_alarm_up() const noexcept { return last_up_; }
  double alarm_score() const noexcept { return alarm_score_; }
  void reset() noexcept { n_ = 0; mean_ = up_ = dn_ = up_min_ = dn_min_ = 0; }

 private:
  double delta_ = 0.5, lambda_ = 5, alarm_score_ = 0;
  std::uint64_t n_ = 0;
  double mean_ = 0, up_ = 0, dn_ = 0, up_min_ = 0, dn_min_ = 0;
  bool last_up_ = false;
};

}  // namespace mltap::detectors
