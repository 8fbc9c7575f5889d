// Reference profiles: what "normal" looks like for a stream, built from training data (offline,
// exact) or pinned from a stream's first records (two-phase, bounded memory), saved and loaded
// as a versioned JSON document (docs/profile-format.md).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/detector_state.hpp"

namespace mltap::detectors {

inline constexpr int kProfileVersion = 2;      // written; version 1 (no noise estimates) still reads
inline constexpr int kMinProfileVersion = 1;
inline constexpr std::uint32_t kMaxBins = 4096;
inline constexpr std::uint32_t kMaxCategories = 4096;
inline constexpr std::size_t kMaxProfileFeatures = 65536 + 64;
inline constexpr std::size_t kMaxEmbeddingDims = 65536;

// How a record's row maps to the analyzed features.
enum class ProfileLayout {
  features,     // one analyzed feature per column
  predictions,  // columns (scores) plus a derived categorical "class" (argmax, or score >= threshold)
  embeddings,   // derived: L2 norm and random projections; plus the mean vector
};

constexpr std::string_view layout_name(ProfileLayout l) noexcept {
  switch (l) {
    case ProfileLayout::features: return "features";
    case ProfileLayout::predictions: return "predictions";
    case ProfileLayout::embeddings: return "embeddings";
  }
  return "features";
}

class ProfileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A feature's sampling noise (noise.hpp): per decision method, the mean and standard deviation
// of its score between a reference of this profile's size and a window of each size in
// `windows`, both drawn from the reference's own distribution (parametric bootstrap). PSI's are on
// the square-root scale (sqrt(PSI) grows like the other scores, 1/sqrt(n)). Empty: not estimated
// (a version-1 profile); the engine estimates it when it loads the profile.
struct NoiseMethod {
  std::string method;
  std::vector<double> mean, sd;  // one per window size
};
struct NoiseEstimate {
  std::uint32_t replicates = 0;
  std::uint32_t coarse_bins = 0;  // coarse bins the PSI/JS/Hellinger noise was estimated with
  std::vector<std::uint64_t> windows;
  std::vector<NoiseMethod> methods;
  bool empty() const noexcept { return windows.empty(); }
  // Heap bytes (method names fit the strings' own storage).
  std::size_t memory_bytes() const noexcept {
    std::size_t b = windows.capacity() * sizeof(std::uint64_t) + methods.capacity() * sizeof(NoiseMethod);
    for (const auto& m : methods) b += (m.mean.capacity() + m.sd.capacity()) * sizeof(double);
    return b;
  }
  const NoiseMethod* find(std::string_view m) const noexcept {
    for (const auto& x : methods) {
      if (x.method == m) return &x;
    }
    return nullptr;
  }
};

struct FeatureProfile {
  std::string name;
  core::FeatureKind kind = core::FeatureKind::numeric;
  bool enabled = true;  // false: kept for the schema, not analyzed (e.g. class share of a regressor)
  std::uint64_t values = 0;  // finite or not
  std::uint64_t nan = 0;
  std::uint64_t pos_inf = 0;
  std::uint64_t neg_inf = 0;
  std::uint64_t finite = 0;
  double mean = 0;
  double variance = 0;  // population variance of finite values
  double min = 0;
  double max = 0;
  bool integer_valued = false;
  // numeric: bin i = [edges[i], edges[i+1]), the last bin closed; counts of reference values;
  // atoms[i] = 1 when every reference value in bin i equals edges[i].
  std::vector<double> edges;
  std::vector<std::uint64_t> counts;
  std::vector<std::uint8_t> atoms;
  // categorical: tracked categories and their counts, the rest pooled in other_count.
  std::vector<double> categories;
  std::vector<std::uint64_t> category_counts;
  std::uint64_t other_count = 0;
  bool exhaustive = true;  // every value seen is a tracked category
  NoiseEstimate noise;     // sampling noise of every decision method (version 2)
};

struct EmbeddingProfile {
  std::uint32_t dims = 0;
  std::uint32_t projections = 16;
  std::uint64_t seed = 0x6d6c746170ULL;
  std::vector<double> mean;     // per dimension (first mean_dims dims)
  double total_variance = 0;    // trace of the covariance (all dims)
  std::uint64_t rows = 0;       // finite rows
};

struct ReferenceProfile {
  int version = kProfileVersion;
  ProfileLayout layout = ProfileLayout::features;
  std::string source;        // "file:<name>", "pinned", "python"
  std::uint64_t created_unix_ns = 0;
  std::string dtype = "float64";   // dtype of the data it was built from
  std::vector<std::uint32_t> row_shape;  // shape of one row; product = columns
  std::uint64_t rows = 0;
  double rank_error = 0;     // error of reference ranks at bin edges (0: exact counts)
  double class_threshold = 0.5;  // predictions with one column: class = score >= threshold
  std::vector<std::string> columns;  // raw column names (features/predictions layouts)
  std::vector<FeatureProfile> features;  // analyzed features (incl. derived ones)
  std::optional<EmbeddingProfile> embedding;

  std::size_t column_count() const noexcept;
};

struct ProfileOptions {
  ProfileLayout layout = ProfileLayout::features;
  std::uint32_t bins = 256;                   // fine bins per numeric feature
  // Low-cardinality features are kept as exact value counts (categorical) whatever their dtype:
  // integers with at most this many distinct values, and other values with at most this many
  // distinct values none of which is seen only once (docs/detectors.md, "Which features are categorical").
  std::uint32_t categorical_max_distinct = 64;
  std::uint32_t max_categories = 64;          // tracked categories per categorical feature
  std::vector<std::string> categorical;       // forced categorical
  std::vector<std::string> numeric;           // forced numeric
  std::uint32_t embedding_projections = 16;
  std::uint64_t embedding_seed = 0x6d6c746170ULL;
  std::uint32_t embedding_mean_dims = 4096;
  double class_threshold = 0.5;
  std::string dtype = "float64";
  std::vector<std::uint32_t> row_shape;       // empty: {cols}
  std::string source = "array";
  bool noise = true;                          // estimate each feature's noise (noise.hpp)
};

// The kind rule shared by offline builds and pinned references: low-cardinality features are
// categorical (exact value counts) whatever their dtype.
// Integers: at most max_distinct distinct values. Other values: at most max_distinct distinct
// values, none seen only once (a value seen once says new values will keep coming, as they do
// for rounded continuous data), and each seen at least twice on average.
bool low_cardinality(bool integer_valued, std::uint64_t distinct, std::uint64_t singletons,
                     std::uint64_t finite, std::uint32_t max_distinct) noexcept;

// Builds a profile from `rows` (row-major, n x cols; NaN/Inf allowed and counted) with exact
// quantile bins. `names` may be empty (then "f0", "f1", ...) or have `cols` unique entries.
// Throws ProfileError on bad input.
ReferenceProfile build_profile(std::span<const double> rows, std::size_t cols,
                               std::vector<std::string> names, const ProfileOptions& options);

void save_profile(const ReferenceProfile& profile, const std::string& path);
ReferenceProfile load_profile(const std::string& path);
// JSON text forms (the file content), for tests and the Python binding.
std::string profile_to_json_text(const ReferenceProfile& profile);
ReferenceProfile profile_from_json_text(const std::string& text, const std::string& origin);
// Checks every invariant the engine relies on; throws ProfileError naming the first violation.
void validate_profile(const ReferenceProfile& profile, const std::string& origin);

// ---------------------------------------------------------------------------------------------
// Row transforms shared by the profile builder and the engine.
class RowTransform {
 public:
  RowTransform() = default;
  RowTransform(ProfileLayout layout, std::size_t columns, const ProfileOptions& options);
  ProfileLayout layout() const noexcept { return layout_; }
  std::size_t in_columns() const noexcept { return in_; }
  std::size_t out_columns() const noexcept { return out_; }
  // Names of the analyzed features given the raw column names (may be empty).
  std::vector<std::string> feature_names(const std::vector<std::string>& columns) const;
  // out has out_columns() values.
  void apply(const double* row, double* out) const noexcept;
  std::uint32_t projections() const noexcept { return projections_; }
  std::uint64_t seed() const noexcept { return seed_; }

 private:
  ProfileLayout layout_ = ProfileLayout::features;
  std::size_t in_ = 0, out_ = 0;
  double class_threshold_ = 0.5;
  std::uint32_t projections_ = 0;
  std::uint64_t seed_ = 0;
  std::vector<std::uint32_t> proj_index_;  // projections_ x nnz_
  std::vector<float> proj_sign_;
  std::uint32_t nnz_ = 0;
};

}  // namespace mltap::detectors
