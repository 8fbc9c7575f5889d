// mltap._profile, behind mltap.Profile: reference profiles (agent/detectors/profile.hpp) built
// from training data in Python and saved for mltapd's drift detectors. The array handling
// (NumPy/torch/pandas -> float64 rows) is in mltap/profile.py; this file binds the C++ builder and
// the JSON document. A module of its own so that `import mltap` (the producer SDK) does not load
// the detectors and what they link; mltap/__init__.py imports it on first use of mltap.Profile.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "agent/detectors/profile.hpp"

namespace py = pybind11;
namespace det = mltap::detectors;

namespace mltap::python {
namespace {

det::ProfileLayout layout_arg(const std::string& s) {
  if (s == "features") return det::ProfileLayout::features;
  if (s == "predictions") return det::ProfileLayout::predictions;
  if (s == "embeddings") return det::ProfileLayout::embeddings;
  throw py::value_error("mltap.Profile: layout must be features, predictions or embeddings; got '" + s + "'");
}

py::dict feature_dict(const det::FeatureProfile& f) {
  py::dict d;
  d["name"] = f.name;
  d["kind"] = mltap::core::feature_kind_name(f.kind);
  d["enabled"] = f.enabled;
  d["values"] = f.values;
  d["nan"] = f.nan;
  d["pos_inf"] = f.pos_inf;
  d["neg_inf"] = f.neg_inf;
  d["finite"] = f.finite;
  d["mean"] = f.mean;
  d["variance"] = f.variance;
  d["min"] = f.min;
  d["max"] = f.max;
  d["integer_valued"] = f.integer_valued;
  d["edges"] = f.edges;
  d["counts"] = f.counts;
  d["categories"] = f.categories;
  d["category_counts"] = f.category_counts;
  d["other_count"] = f.other_count;
  return d;
}

det::ReferenceProfile build(py::buffer data, std::vector<std::string> names,
                            const std::string& layout, std::uint32_t bins,
                            std::uint32_t categorical_max_distinct, std::uint32_t max_categories,
                            std::vector<std::string> categorical, std::vector<std::string> numeric,
                            std::uint32_t embedding_projections, std::uint64_t embedding_seed,
                            double class_threshold, std::string dtype,
                            std::vector<std::uint32_t> row_shape, std::string source) {
  const py::buffer_info info = data.request();
  if (info.format != py::format_descriptor<double>::format() || info.ndim != 2 ||
      info.strides[1] != static_cast<py::ssize_t>(sizeof(double)) ||
      info.strides[0] != info.shape[1] * static_cast<py::ssize_t>(sizeof(double))) {
    throw py::type_error("mltap.Profile._build: expects a C-contiguous 2-D float64 buffer");
  }
  det::ProfileOptions o;
  o.layout = layout_arg(layout);
  o.bins = bins;
  o.categorical_max_distinct = categorical_max_distinct;
  o.max_categories = max_categories;
  o.categorical = std::move(categorical);
  o.numeric = std::move(numeric);
  o.embedding_projections = embedding_projections;
  o.embedding_seed = embedding_seed;
  o.class_threshold = class_threshold;
  o.dtype = std::move(dtype);
  o.row_shape = std::move(row_shape);
  o.source = std::move(source);
  const auto rows = static_cast<std::size_t>(info.shape[0]);
  const auto cols = static_cast<std::size_t>(info.shape[1]);
  const std::span<const double> values(static_cast<const double*>(info.ptr), rows * cols);
  py::gil_scoped_release nogil;  // exact quantiles of a large training set take a while
  return det::build_profile(values, cols, std::move(names), o);
}

void bind_profile(py::module_& m) {
  py::register_exception<det::ProfileError>(m, "ProfileError", PyExc_ValueError);
  py::class_<det::ReferenceProfile> cls(m, "Profile", R"doc(A reference profile: what "normal" looks like for a stream.

Build one from training data with Profile.from_array(x, features=[...]), save it with
.save(path) (versioned JSON, docs/profile-format.md) and point mltapd's drift detection at the
file. Profile.load(path) reads and validates one. Invalid input raises mltap.ProfileError
(a ValueError).)doc");
  cls.def_static("_build", &build, py::arg("data"), py::arg("names"), py::arg("layout"),
                 py::arg("bins"), py::arg("categorical_max_distinct"), py::arg("max_categories"),
                 py::arg("categorical"), py::arg("numeric"), py::arg("embedding_projections"),
                 py::arg("embedding_seed"), py::arg("class_threshold"), py::arg("dtype"),
                 py::arg("row_shape"), py::arg("source"));
  cls.def_static(
      "load",
      [](const std::string& path) {
        py::gil_scoped_release nogil;
        return det::load_profile(path);
      },
      py::arg("path"), "Reads and validates a saved profile (raises ProfileError).");
  cls.def_static(
      "from_json", [](const std::string& text) { return det::profile_from_json_text(text, "<json>"); },
      py::arg("text"), "Parses and validates a profile document (raises ProfileError).");
  cls.def(
      "save",
      [](const det::ReferenceProfile& p, const std::string& path) {
        py::gil_scoped_release nogil;
        det::save_profile(p, path);
      },
      py::arg("path"), "Writes the profile as JSON (raises ProfileError on I/O errors).");
  cls.def("to_json", [](const det::ReferenceProfile& p) { return det::profile_to_json_text(p); });
  cls.def_readonly("version", &det::ReferenceProfile::version);
  cls.def_property_readonly("layout", [](const det::ReferenceProfile& p) { return det::layout_name(p.layout); });
  cls.def_readonly("source", &det::ReferenceProfile::source);
  cls.def_readonly("created_unix_ns", &det::ReferenceProfile::created_unix_ns);
  cls.def_readonly("dtype", &det::ReferenceProfile::dtype);
  cls.def_readonly("row_shape", &det::ReferenceProfile::row_shape);
  cls.def_readonly("rows", &det::ReferenceProfile::rows);
  cls.def_readonly("rank_error", &det::ReferenceProfile::rank_error);
  cls.def_readonly("columns", &det::ReferenceProfile::columns);
  cls.def_property_readonly("features", [](const det::ReferenceProfile& p) {
    py::list out;
    for (const auto& f : p.features) out.append(feature_dict(f));
    return out;
  }, "Analyzed features (including derived ones) as dicts");
  cls.def_property_readonly("embedding", [](const det::ReferenceProfile& p) -> py::object {
    if (!p.embedding) return py::none();
    py::dict d;
    d["dims"] = p.embedding->dims;
    d["projections"] = p.embedding->projections;
    d["seed"] = p.embedding->seed;
    d["mean"] = p.embedding->mean;
    d["total_variance"] = p.embedding->total_variance;
    d["rows"] = p.embedding->rows;
    return d;
  });
  cls.def("__repr__", [](const det::ReferenceProfile& p) {
    return "<mltap.Profile layout=" + std::string(det::layout_name(p.layout)) +
           " rows=" + std::to_string(p.rows) + " columns=" + std::to_string(p.columns.size()) +
           " features=" + std::to_string(p.features.size()) + ">";
  });
}

}  // namespace
}  // namespace mltap::python

PYBIND11_MODULE(_profile, m) {
  m.doc() = "mltap reference profiles (extension module; use mltap.Profile)";
  mltap::python::bind_profile(m);
}
