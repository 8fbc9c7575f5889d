#include "agent/performance/estimate.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include "core/log.hpp"

#include "agent/performance/pending_table.hpp"
#include "core/state_store.hpp"

namespace mltap::performance {

struct Estimator::Header {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t slots;
  std::int64_t window_ns;
  std::uint64_t fingerprint;  // of the reference the sums were scored with (0: none yet)
  double threshold;
  std::uint64_t reserved[3];
};

namespace {

constexpr std::uint64_t kEstimateMagic = 0x4554414D'49545345ULL;  // "ESTIMATE"
constexpr std::uint32_t kEstimateVersion = 2;
constexpr std::uint32_t kFolds = 5;
constexpr double kBandSigmas = 3;
constexpr std::int64_t kUnused = std::numeric_limits<std::int64_t>::min();

std::uint64_t fnv(const void* data, std::size_t n, std::uint64_t h = 1469598103934665603ULL) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}

core::EstimatedValue band(double value, double sigma) noexcept {
  return core::EstimatedValue{value, std::clamp(value - kBandSigmas * sigma, 0.0, 1.0),
                              std::clamp(value + kBandSigmas * sigma, 0.0, 1.0)};
}

std::string percent(double share) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100 * share);
  return buf;
}

}  // namespace

// Two sources of error. (1) Sampling: under the estimate's assumption (the calibrated p is
// P(label = 1 | score), labels independent given the scores) the window's labels are independent
// Bernoulli(p): A = TP = sum of labels over predicted positives and B = FN = sum over predicted
// negatives are independent with means tp, fn and variances var_pos, var_neg. (2) The
// reference's own: the calibrated mean of score bin b is off by d_b, independent across bins,
// variance bin_var[b] (p_b (1 - p_b) / reference pairs in b), shifting A by pos_bin[b] d_b and
// B by neg_bin[b] d_b. Accuracy and precision are linear in (A, B): exact variances; recall and
// F1 are ratios: first order (delta method). The band is +- 3 sigma, clipped to [0, 1].
core::PerformanceEstimate estimate_from_sums(const EstimateSums& s, std::span<const double> bin_var) {
  core::PerformanceEstimate e;
  e.predictions = s.n;
  e.unsupported = s.unsupported;
  if (s.n == 0) return e;
  const double n = static_cast<double>(s.n);
  const double npp = static_cast<double>(s.n_pos);
  const double npn = n - npp;
  const double a = s.tp, b = s.fn, va = std::max(0.0, s.var_pos), vb = std::max(0.0, s.var_neg);
  // Variance of a metric with partial derivatives ga (in A) and gb (in B).
  auto variance = [&](double ga, double gb) {
    double v = ga * ga * va + gb * gb * vb;
    for (std::size_t i = 0; i < bin_var.size() && i < kEstimateBins; ++i) {
      const double shift = ga * s.pos_bin[i] + gb * s.neg_bin[i];
      v += shift * shift * bin_var[i];
    }
    return v;
  };
  e.accuracy = band((a + (npn - b)) / n, std::sqrt(variance(1 / n, -1 / n)));
  if (npp > 0) e.precision = band(a / npp, std::sqrt(variance(1 / npp, 0)));
  if (a + b > 0) {
    const double p = a + b;
    e.recall = band(a / p, std::sqrt(variance(b / (p * p), -a / (p * p))));
  }
  if (const double d = npp + a + b; d > 0) {
    e.f1 = band(2 * a / d, std::sqrt(variance(2 * (npp + b) / (d * d), -2 * a / (d * d))));
  }
  return e;
}

Estimator::Estimator(const std::string& dir, const std::string& stem, const std::string& stream,
                     std::int64_t window_ns, const PerformanceConfig& config)
    : dir_(dir), stream_(stream), window_ns_(window_ns), target_(config.reference_pairs),
      threshold_(config.threshold), bins_(std::max<std::uint32_t>(1, config.calibration_bins)),
      min_bin_pairs_(config.estimate_min_bin_pairs), max_unsupported_(config.estimate_max_unsupported) {
  // The stem ends with the stream name's hash: a valid, short state document name.
  doc_name_ = "estimate-reference." + stem.substr(stem.size() >= 16 ? stem.size() - 16 : 0);
  if (!dir_.empty()) sums_path_ = dir_ + "/" + stem + ".estimate";
  pairs_.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(target_, 1u << 20)));
  if (!dir_.empty()) load_reference();
  open_sums();
}

Estimator::~Estimator() {
  if (base_) ::munmap(base_, bytes_);
}

bool Estimator::load_reference() {
  const core::StateStore store(dir_);
  const auto r = store.read(doc_name_, 1);
  if (r.status == core::StateReadResult::Status::unusable) {
    core::log::warn("performance: reference of '{}' unusable: {}; collecting a new one", stream_, r.detail);
  }
  if (r.status != core::StateReadResult::Status::ok) return false;
  try {
    const auto j = nlohmann::json::parse(r.data);
    if (j.at("stream").get<std::string>() != stream_) return false;
    std::vector<JoinedPair> pairs;
    for (const auto& p : j.at("pairs")) {
      const double s = p.at(0).get<double>(), y = p.at(1).get<double>();
      if (!std::isfinite(s) || !std::isfinite(y)) throw std::runtime_error("a pair is not finite");
      pairs.push_back(JoinedPair{s, y});
    }
    if (pairs.size() != target_) {
      core::log::info("performance: reference of '{}' has {} pairs, performance.reference_pairs is {}: "
                   "collecting a new one",
                   stream_, pairs.size(), target_);
      return false;
    }
    pairs_ = std::move(pairs);
    fit(j.at("fitted_unix_ns").get<std::int64_t>());
    return true;
  } catch (const std::exception& e) {
    core::log::warn("performance: reference of '{}' in {}/{}.json unusable ({}); collecting a new one",
                 stream_, dir_, doc_name_, e.what());
    pairs_.clear();
    return false;
  }
}

void Estimator::store_reference() const {
  if (dir_.empty()) return;
  nlohmann::json pairs = nlohmann::json::array();
  for (const auto& p : pairs_) pairs.push_back({p.prediction, p.label});
  const nlohmann::json j{{"stream", stream_}, {"source", "first_joined_pairs"},
                         {"fitted_unix_ns", fitted_ns_}, {"pairs", std::move(pairs)}};
  std::string error;
  // Once per stream, on the ingest thread: the fsyncs of one small document.
  if (!core::StateStore(dir_).write(core::StateDocument{doc_name_, 1, j.dump()}, error)) {
    core::log::warn("performance: reference of '{}' not stored ({}); it is refitted after a restart", stream_,
                 error);
  }
}

void Estimator::open_sums() {
  const std::size_t bytes = sizeof(Header) + sizeof(EstimateSums) * kWindowCounterSlots;
  void* p = MAP_FAILED;
  if (!sums_path_.empty()) {
    const int fd = ::open(sums_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    struct stat st {};
    if (fd >= 0 && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        (static_cast<std::size_t>(st.st_size) == bytes || ::ftruncate(fd, static_cast<off_t>(bytes)) == 0)) {
      p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
    if (p == MAP_FAILED) {
      core::log::warn("performance: cannot map {}: {}; estimates kept in memory only", sums_path_,
                   std::strerror(errno));
    }
    if (fd >= 0) ::close(fd);
  }
  mapped_file_ = p != MAP_FAILED;
  if (p == MAP_FAILED) p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("cannot allocate the estimates' window sums");
  base_ = p;
  bytes_ = bytes;
  header_ = static_cast<Header*>(p);
  sums_ = reinterpret_cast<EstimateSums*>(static_cast<char*>(p) + sizeof(Header));
  const Header& h = *header_;
  // Sums scored with another reference, window or threshold (or no file yet) start over.
  if (h.magic != kEstimateMagic || h.version != kEstimateVersion || h.slots != kWindowCounterSlots ||
      h.window_ns != window_ns_ || h.fingerprint != fingerprint_ || h.threshold != threshold_) {
    *header_ = Header{kEstimateMagic, kEstimateVersion, kWindowCounterSlots, window_ns_, fingerprint_, threshold_, {}};
    for (std::uint32_t i = 0; i < kWindowCounterSlots; ++i) sums_[i] = EstimateSums{kUnused, 0, 0, 0, 0, 0, 0, 0, {}, {}};
  }
}

void Estimator::fit(std::int64_t now) {
  calibration_ = choose_calibration(pairs_, kFolds, bins_);
  bin_counts_.assign(kEstimateBins, 0);
  std::vector<double> mean(kEstimateBins, 0.0);
  for (const auto& p : pairs_) {
    if (p.prediction >= 0 && p.prediction <= 1) {
      const auto b = std::min<std::uint32_t>(kEstimateBins - 1, static_cast<std::uint32_t>(p.prediction * kEstimateBins));
      ++bin_counts_[b];
      mean[b] += std::clamp(calibration_.apply(p.prediction), 0.0, 1.0);
    }
  }
  bin_var_.assign(kEstimateBins, 0.0);
  for (std::uint32_t b = 0; b < kEstimateBins; ++b) {
    // A bin without reference pairs: the map extrapolates there; the largest variance, 1/4.
    const double m = bin_counts_[b] > 0 ? mean[b] / static_cast<double>(bin_counts_[b]) : 0.5;
    bin_var_[b] = m * (1 - m) / static_cast<double>(std::max<std::uint64_t>(1, bin_counts_[b]));
  }
  fingerprint_ = fnv(pairs_.data(), pairs_.size() * sizeof(JoinedPair)) | 1;  // never 0
  fitted_ = true;
  fitted_ns_ = now;
}

void Estimator::on_joined(double score, double label, std::int64_t now) {
  if (fitted_ || target_ == 0) return;
  pairs_.push_back(JoinedPair{score, label});
  if (pairs_.size() < target_) return;
  fit(now);
  store_reference();
  *header_ = Header{kEstimateMagic, kEstimateVersion, kWindowCounterSlots, window_ns_, fingerprint_, threshold_, {}};
  for (std::uint32_t i = 0; i < kWindowCounterSlots; ++i) sums_[i] = EstimateSums{kUnused, 0, 0, 0, 0, 0, 0, 0, {}, {}};
  core::log::info("performance: reference of '{}' fitted on {} joined pairs: {} (ECE raw {:.4f}, isotonic "
               "held-out {:.4f})",
               stream_, pairs_.size(), calibration_.calibrated ? "isotonic calibration" : "raw scores",
               calibration_.ece_raw, calibration_.ece_calibrated);
}

namespace {
std::uint32_t score_bin(double score) noexcept {
  const double c = std::clamp(score, 0.0, 1.0);
  return std::min<std::uint32_t>(kEstimateBins - 1, static_cast<std::uint32_t>(c * kEstimateBins));
}
}  // namespace

bool Estimator::supported(double score) const noexcept {
  if (!(score >= 0 && score <= 1)) return false;
  return bin_counts_[score_bin(score)] >= min_bin_pairs_;
}

EstimateSums* Estimator::slot(std::int64_t start) noexcept {
  EstimateSums& s = sums_[static_cast<std::uint64_t>(start / window_ns_) % kWindowCounterSlots];
  if (s.start_ns == start) return &s;
  if (s.start_ns != kUnused && s.start_ns > start) return nullptr;  // beyond any retention
  s = EstimateSums{start, 0, 0, 0, 0, 0, 0, 0, {}, {}};
  return &s;
}

void Estimator::on_prediction(std::int64_t window_start, double score) noexcept {
  if (!fitted_) return;
  EstimateSums* s = slot(window_start);
  if (!s) return;
  const double p = std::clamp(calibration_.apply(score), 0.0, 1.0);
  ++s->n;
  if (!supported(score)) ++s->unsupported;
  const std::uint32_t b = score_bin(score);
  if (score >= threshold_) {
    ++s->pos_bin[b];
    ++s->n_pos;
    s->tp += p;
    s->var_pos += p * (1 - p);
  } else {
    ++s->neg_bin[b];
    s->fn += p;
    s->var_neg += p * (1 - p);
  }
}

core::EstimateReference Estimator::reference_state() const {
  core::EstimateReference r;
  r.source = "first_joined_pairs";
  r.pairs = pairs_.size();
  r.target = target_;
  r.fitted = fitted_;
  r.fitted_unix_ns = fitted_ns_;
  r.calibrated = calibration_.calibrated;
  r.ece_raw = calibration_.ece_raw;
  r.ece_calibrated = calibration_.ece_calibrated;
  return r;
}

core::PerformanceEstimate Estimator::window_estimate(std::int64_t start) const {
  const EstimateSums& s = sums_[static_cast<std::uint64_t>(start / window_ns_) % kWindowCounterSlots];
  core::PerformanceEstimate e;
  if (s.start_ns != start || s.n == 0) {
    e.withheld = core::EstimateWithheld::no_reference;
    e.withheld_detail = fitted_ ? "the window's predictions arrived before the reference was fitted"
                                : "the reference has " + std::to_string(pairs_.size()) + " of its " +
                                      std::to_string(target_) + " joined pairs";
    return e;
  }
  const double share = static_cast<double>(s.unsupported) / static_cast<double>(s.n);
  if (share > max_unsupported_) {
    e.predictions = s.n;
    e.unsupported = s.unsupported;
    e.withheld = core::EstimateWithheld::outside_support;
    e.withheld_detail = "scores outside the reference's support: " + percent(share) +
                        " of the window's scores fall in score ranges with fewer than " +
                        std::to_string(min_bin_pairs_) + " reference pairs (at most " +
                        percent(max_unsupported_) + " allowed)";
    return e;
  }
  return estimate_from_sums(s, bin_var_);
}

}  // namespace mltap::performance
