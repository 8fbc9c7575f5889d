#include <algorithm>
#include <string_view>

#include "agent/detectors/engine_state.hpp"

namespace mltap::detectors {
namespace {

bool same_family(std::string_view profile_dtype, format::DType t) {
  auto family = [](std::string_view d) {
    if (d.starts_with("float") || d == "bfloat16") return 0;
    if (d == "bool") return 2;
    return 1;
  };
  return family(profile_dtype) == family(format::dtype_name(t));
}

}  // namespace

bool check_schema(EngineState& e, StreamState& s, const core::DecodedBatch& b) {
  if (b.cols != s.in_cols) {
    s.records_rejected += b.rows;
    e.counters.records_rejected += b.rows;
    ++s.window_mismatch;
    raise_finding(e, s, FindingKind::schema_change, Severity::critical, "feature_count",
          "records have " + std::to_string(b.cols) + " values per row, the reference has " + std::to_string(s.in_cols) +
              "; " + std::to_string(s.records_rejected) + " records not analyzed",
          {}, b.rows, Onset{s.rec_ns, "batch"});
    return false;
  }
  std::string reason, detail;
  if (s.expected_dtype == format::DType::invalid) {
    s.expected_dtype = b.stream->declared_dtype != format::DType::invalid ? b.stream->declared_dtype : b.dtype;
    if (s.ref_source == ReferenceSource::file && !s.ref_dtype.empty() && !same_family(s.ref_dtype, s.expected_dtype)) {
      reason = "dtype";
      detail = "stream dtype " + std::string(format::dtype_name(s.expected_dtype)) + ", reference built from " + s.ref_dtype;
    }
    if (s.ref_source != ReferenceSource::file) s.ref_dtype = std::string(format::dtype_name(s.expected_dtype));
  }
  if (reason.empty() && b.dtype != s.expected_dtype) {
    reason = "dtype";
    detail = "dtype " + std::string(format::dtype_name(b.dtype)) + ", expected " + std::string(format::dtype_name(s.expected_dtype));
  }
  if (s.expected_shape.empty()) {
    s.expected_shape = !b.stream->row_shape.empty() ? b.stream->row_shape
                                                    : std::vector<std::uint32_t>(b.row_shape.begin(), b.row_shape.end());
  }
  if (reason.empty() && !b.row_shape.empty() &&
      !std::equal(b.row_shape.begin(), b.row_shape.end(), s.expected_shape.begin(), s.expected_shape.end())) {
    reason = "shape";
    std::string got, want;
    for (auto d : b.row_shape) got += (got.empty() ? "" : "x") + std::to_string(d);
    for (auto d : s.expected_shape) want += (want.empty() ? "" : "x") + std::to_string(d);
    detail = "row shape " + got + ", expected " + want;
  }
  if (!reason.empty()) {
    ++s.window_mismatch;
    raise_finding(e, s, FindingKind::schema_change, Severity::warning, reason, detail, {}, b.rows,
                  Onset{s.rec_ns, "batch"});
  }
  return true;
}

}  // namespace mltap::detectors
