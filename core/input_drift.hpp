// What the performance component needs to know about the inputs of a predictions stream to say
// how abnormal a performance drop is (docs/performance.md, "Findings"): which input streams
// drifted and how many of their features. The detectors know it; the performance component may
// not use them (domain components do not use each other, docs/architecture.md), so the
// composition root (mltapd) hands it a source built on the detectors' snapshot.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace mltap::core {

struct InputDrift {
  std::string stream;                    // an input (features or embeddings) stream
  bool analyzed = false;                 // the detectors compare it with a reference
  std::uint32_t features_analyzed = 0;
  std::uint32_t drifted_features = 0;
  std::vector<std::string> drifted;      // names of the drifted features (bounded)
  // The distribution as a whole moved: an open embedding_drift finding (norms, cosine,
  // projections: a multivariate score).
  bool multivariate_drift = false;
};

// The inputs of `predictions_stream`: the configured `inputs` when not empty, else the features
// and embeddings streams of the same component (docs/performance.md). Called on the ingest
// thread; must be thread-safe with respect to whoever publishes the drift state.
using InputDriftSource = std::function<std::vector<InputDrift>(
    const std::string& predictions_stream, const std::vector<std::string>& inputs)>;

}  // namespace mltap::core
