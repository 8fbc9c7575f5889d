// _mltap: the extension behind the `mltap` package (shm/python/mltap/__init__.py).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "mltap/stream.hpp"
#include "py_stream.hpp"
#include "write_results.hpp"

#ifndef MLTAP_VERSION
#error "MLTAP_VERSION must be defined by the build"
#endif

namespace py = pybind11;

namespace mltap::python {

// ---------------------------------------------------------------------------------------------
// Write results.
namespace {
PyObject* g_results[3] = {nullptr, nullptr, nullptr};
}

PyObject* new_result_ref(WriteResult r) noexcept {
  PyObject* o = g_results[static_cast<int>(r)];
  Py_INCREF(o);
  return o;
}

bool set_write_results(PyObject* written, PyObject* sampled_out, PyObject* dropped) noexcept {
  PyObject* objs[3] = {written, sampled_out, dropped};
  for (int i = 0; i < 3; ++i) {
    Py_INCREF(objs[i]);
    Py_XSETREF(g_results[i], objs[i]);
  }
  return true;
}

namespace {

// ---------------------------------------------------------------------------------------------
// Constructor arguments. Wrong types raise TypeError, wrong values ValueError, naming the argument.

std::string str_arg(py::handle o, const char* what) {
  if (!PyUnicode_Check(o.ptr())) {
    throw py::type_error(std::string("mltap.Stream: ") + what + " must be a str, not " +
                         Py_TYPE(o.ptr())->tp_name);
  }
  return o.cast<std::string>();
}

std::int64_t int_arg(py::handle o, const char* what, std::int64_t lo, std::int64_t hi) {
  if (!PyLong_Check(o.ptr()) || PyBool_Check(o.ptr())) {
    throw py::type_error(std::string("mltap.Stream: ") + what + " must be an int, not " +
                         Py_TYPE(o.ptr())->tp_name);
  }
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(o.ptr(), &overflow);
  if (overflow != 0 || v < lo || v > hi) {
    throw py::value_error(std::string("mltap.Stream: ") + what + " must be in [" +
                          std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                          py::str(o).cast<std::string>());
  }
  return v;
}

StreamKind kind_arg(const std::string& k) {
  static const std::pair<const char*, StreamKind> kinds[] = {
      {"features", StreamKind::features}, {"predictions", StreamKind::predictions},
      {"labels", StreamKind::labels},     {"embeddings", StreamKind::embeddings},
      {"raw", StreamKind::raw},
  };
  for (const auto& [name, kind] : kinds) {
    if (k == name) return kind;
  }
  throw py::value_error("mltap.Stream: kind must be one of features, predictions, labels, "
                        "embeddings, raw; got '" + k + "'");
}

struct DeclaredDType {
  format::DType dtype = format::DType::invalid;
  py::object numpy_name = py::none();  // for numpy.asarray of lists
};

// dtype=: a name ("float32", "bfloat16", ...), a NumPy dtype or scalar type, a torch dtype.
DeclaredDType dtype_arg(py::handle o) {
  DeclaredDType d;
  if (o.is_none()) return d;
  std::string name;
  if (PyUnicode_Check(o.ptr())) {
    name = o.cast<std::string>();
  } else if (PyType_Check(o.ptr())) {
    name = py::str(o.attr("__name__")).cast<std::string>();  // numpy.float32, float, int, bool
  } else {
    name = py::str(o).cast<std::string>();  // numpy.dtype('float32'), torch.float32
    if (name.rfind("torch.", 0) == 0) name = name.substr(6);
  }
  static const std::pair<const char*, format::DType> names[] = {
      {"float32", format::DType::float32}, {"float64", format::DType::float64},
      {"float16", format::DType::float16}, {"bfloat16", format::DType::bfloat16},
      {"int8", format::DType::int8},       {"int16", format::DType::int16},
      {"int32", format::DType::int32},     {"int64", format::DType::int64},
      {"uint8", format::DType::uint8},     {"uint16", format::DType::uint16},
      {"uint32", format::DType::uint32},   {"uint64", format::DType::uint64},
      {"bool", format::DType::boolean},    {"bool_", format::DType::boolean},
      {"float", format::DType::float64},   {"double", format::DType::float64},
      {"half", format::DType::float16},    {"int", format::DType::int64},
  };
  for (const auto& [n, t] : names) {
    if (name == n) d.dtype = t;
  }
  if (d.dtype == format::DType::invalid) {
    throw py::value_error("mltap.Stream: unknown dtype '" + name +
                          "'; one of float32, float64, float16, bfloat16, int8, int16, int32, "
                          "int64, uint8, uint16, uint32, uint64, bool");
  }
  // NumPy has no bfloat16: lists for such a stream are converted to float32.
  const std::string_view np_name =
      d.dtype == format::DType::bfloat16 ? "float32" : format::dtype_name(d.dtype);
  d.numpy_name = py::str(std::string(np_name));
  return d;
}

std::vector<std::string> features_arg(py::handle o) {
  std::vector<std::string> out;
  if (o.is_none()) return out;
  if (PyUnicode_Check(o.ptr())) {
    throw py::type_error("mltap.Stream: features must be a list of names, not a single str");
  }
  if (!PyObject_HasAttrString(o.ptr(), "__iter__")) {
    throw py::type_error(std::string("mltap.Stream: features must be a list of names, not ") +
                         Py_TYPE(o.ptr())->tp_name);
  }
  for (py::handle f : py::iter(o)) {
    if (!PyUnicode_Check(f.ptr())) {
      throw py::type_error(std::string("mltap.Stream: feature names must be str, got ") +
                           Py_TYPE(f.ptr())->tp_name);
    }
    out.push_back(f.cast<std::string>());
  }
  return out;
}

std::vector<std::uint32_t> row_shape_arg(py::handle o) {
  std::vector<std::uint32_t> out;
  if (o.is_none()) return out;
  if (PyLong_Check(o.ptr())) {
    out.push_back(static_cast<std::uint32_t>(int_arg(o, "row_shape", 1, 0xFFFFFFFFll)));
    return out;
  }
  if (PyUnicode_Check(o.ptr()) || !PyObject_HasAttrString(o.ptr(), "__iter__")) {
    throw py::type_error(std::string("mltap.Stream: row_shape must be a sequence of ints, not ") +
                         Py_TYPE(o.ptr())->tp_name);
  }
  for (py::handle d : py::iter(o)) {
    out.push_back(static_cast<std::uint32_t>(int_arg(d, "row_shape[i]", 1, 0xFFFFFFFFll)));
  }
  if (out.empty() || out.size() > format::kMaxRowDims) {
    throw py::value_error("mltap.Stream: row_shape must have 1 to 6 dimensions");
  }
  return out;
}

std::unique_ptr<PyStream> make_stream(py::object name, py::object component, py::object features,
                                      py::object kind, py::object dtype, py::object row_shape,
                                      py::object sampling_budget, py::object ring_bytes,
                                      py::object lanes, py::object ns, py::object shm_dir,
                                      py::object clock, py::object shm_group, py::object artifacts,
                                      py::object labels_stream, py::object task) {
  StreamOptions o;
  const std::string stream_name = str_arg(name, "name");
  if (!component.is_none()) o.component = str_arg(component, "component");
  o.features = features_arg(features);
  o.kind = kind_arg(str_arg(kind, "kind"));
  const DeclaredDType d = dtype_arg(dtype);
  o.dtype = d.dtype;
  o.row_shape = row_shape_arg(row_shape);
  o.sampling_budget = static_cast<std::uint32_t>(int_arg(sampling_budget, "sampling_budget", 0, 0xFFFFFFFFll));
  o.ring_bytes = static_cast<std::uint64_t>(int_arg(ring_bytes, "ring_bytes", 1, std::numeric_limits<std::int64_t>::max()));
  o.lanes = static_cast<std::uint32_t>(int_arg(lanes, "lanes", 1, format::kMaxLanes));
  if (!ns.is_none()) o.ns = str_arg(ns, "namespace");
  if (!shm_dir.is_none()) o.shm_dir = str_arg(shm_dir, "shm_dir");
  if (!shm_group.is_none()) o.shm_group = str_arg(shm_group, "shm_group");
  if (!artifacts.is_none()) {
    if (py::isinstance<py::str>(artifacts) || !py::isinstance<py::sequence>(artifacts)) {
      throw py::type_error("mltap.Stream: artifacts must be a sequence of paths");
    }
    for (py::handle a : artifacts) {
      // os.PathLike is accepted too.
      o.artifacts.push_back(str_arg(py::module_::import("os").attr("fspath")(a), "artifacts[i]"));
    }
  }
  if (!labels_stream.is_none()) o.labels_stream = str_arg(labels_stream, "labels_stream");
  if (!task.is_none()) {
    const std::string t = str_arg(task, "task");
    if (t == "binary") o.task = format::Task::binary;
    else if (t == "multiclass") o.task = format::Task::multiclass;
    else if (t == "regression") o.task = format::Task::regression;
    else throw py::value_error("mltap.Stream: task must be one of binary, multiclass, regression, got '" + t + "'");
  }
  const std::string c = str_arg(clock, "clock");
  if (c == "coarse") {
    o.clock = format::ClockKind::realtime_coarse;
  } else if (c == "precise") {
    o.clock = format::ClockKind::realtime;
  } else {
    throw py::value_error("mltap.Stream: clock must be 'coarse' or 'precise', got '" + c + "'");
  }
  const std::uint32_t record_ndim =
      o.row_shape.empty() ? 1u : static_cast<std::uint32_t>(o.row_shape.size());
  // mltap::Stream throws std::invalid_argument (-> ValueError) for what only it checks.
  return std::make_unique<PyStream>(stream_name, std::move(o), record_ndim, d.numpy_name);
}

// ---------------------------------------------------------------------------------------------
// Stream.write as a METH_FASTCALL | METH_KEYWORDS method: write(x, trace_ids=None).

PyObject* g_s_x = nullptr;
PyObject* g_s_trace_ids = nullptr;

PyStream* stream_of(PyObject* self) {
  void* p = nullptr;
  auto* inst = reinterpret_cast<py::detail::instance*>(self);
  if (inst->simple_layout) {
    p = inst->simple_value_holder[0];
  } else {
    try {
      p = py::cast<PyStream*>(py::handle(self));
    } catch (const py::cast_error&) {
      p = nullptr;
    }
  }
  if (!p) PyErr_SetString(PyExc_TypeError, "mltap: Stream.__init__ was not called");
  return static_cast<PyStream*>(p);
}

bool same_name(PyObject* a, PyObject* interned) {
  return a == interned || PyUnicode_Compare(a, interned) == 0;
}

PyObject* stream_write(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  PyObject* x = nargs >= 1 ? args[0] : nullptr;
  PyObject* trace_ids = nargs >= 2 ? args[1] : Py_None;
  if (nargs > 2) {
    PyErr_Format(PyExc_TypeError, "Stream.write() takes at most 2 arguments (%zd given)", nargs);
    return nullptr;
  }
  if (kwnames) {
    const Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < nk; ++i) {
      PyObject* key = PyTuple_GET_ITEM(kwnames, i);
      PyObject* value = args[nargs + i];
      if (same_name(key, g_s_x) && nargs < 1) {
        x = value;
      } else if (same_name(key, g_s_trace_ids) && nargs < 2) {
        trace_ids = value;
      } else {
        PyErr_Format(PyExc_TypeError, "Stream.write() got an unexpected or repeated keyword argument '%U'", key);
        return nullptr;
      }
    }
  }
  if (!x) {
    PyErr_SetString(PyExc_TypeError, "Stream.write() missing required argument 'x'");
    return nullptr;
  }
  PyStream* s = stream_of(self);
  if (!s) return nullptr;
  try {
    return s->write(x, trace_ids);
  } catch (const std::bad_alloc&) {
    return PyErr_NoMemory();
  }
}

constexpr const char* kWriteDoc =
    "write(x, trace_ids=None) -> WriteResult\n\n"
    "Writes a record or a batch of records. x is a NumPy array, a CPU torch.Tensor, a buffer-\n"
    "protocol object, a list/tuple or a number. An input with the record's dims (1 unless\n"
    "row_shape= declares more) is one record; one more leading dim makes it a batch, one record\n"
    "per row; with one value per record declared (features=[name], row_shape=[1]) a 1-D array\n"
    "of n values is n records. trace_ids: an int for one record, or one int per row (a sequence,\n"
    "an int64/uint64 array or tensor); signed ids are taken as their 64-bit pattern.\n"
    "Returns WriteResult.written (at least one row reached the ring), .sampled_out or .dropped.\n"
    "Never raises for the data (unsupported dtypes, shapes, trace_ids of the wrong length are\n"
    "counted in stats()['rows_bad_input'] with a one-time RuntimeWarning); raises TypeError or\n"
    "ValueError for arguments of the wrong kind (x not array-like, trace_ids not integers).";

PyMethodDef g_write_def = {"write", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&stream_write)),
                           METH_FASTCALL | METH_KEYWORDS, kWriteDoc};

}  // namespace
}  // namespace mltap::python

PYBIND11_MODULE(_mltap, m) {
  using namespace mltap::python;
  m.doc() = "mltap producer SDK (extension module; use the `mltap` package)";
  m.attr("__version__") = MLTAP_VERSION;
  mltap::set_sdk_name("python/" MLTAP_VERSION);

  g_results[0] = PyUnicode_InternFromString("written");
  g_results[1] = PyUnicode_InternFromString("sampled_out");
  g_results[2] = PyUnicode_InternFromString("dropped");
  g_s_x = PyUnicode_InternFromString("x");
  g_s_trace_ids = PyUnicode_InternFromString("trace_ids");

  py::class_<PyStream> cls(m, "Stream", R"doc(A stream of tensors written into a shared-memory ring that mltapd reads.

Stream(name, *, component=None, features=None, kind="features", dtype=None, row_shape=None,
       sampling_budget=20000, ring_bytes=4 MiB, lanes=16, namespace=None, shm_dir=None,
       clock="coarse", shm_group=None, artifacts=None, labels_stream=None, task=None)

name: "shop/features"-style stream name; component: this program's role (default: its name);
features: feature names (declares a row of len(features) values); kind: features, predictions,
labels, embeddings or raw; dtype/row_shape: declared record type (metadata for the agent);
sampling_budget: rows per second kept in full, sampled above (0 = keep all); ring_bytes: ring
size per writing thread (power of two, 64 KiB..1 GiB); lanes: max threads writing at once;
namespace: defaults to $MLTAP_NAMESPACE or "default"; shm_dir: $MLTAP_SHM_DIR or /dev/shm;
artifacts: absolute paths of files the output depends on (the served model...): mltapd watches
them and relates their changes to this stream's findings; labels_stream, task (kind="predictions"
only): the stream (kind="labels") whose rows, joined by trace id, label these predictions, and
"binary", "multiclass" or "regression": mltapd reports the realized performance per window.)doc");
  cls.def(py::init(&make_stream), py::arg("name"), py::kw_only(),
          py::arg("component") = py::none(), py::arg("features") = py::none(),
          py::arg("kind") = "features", py::arg("dtype") = py::none(),
          py::arg("row_shape") = py::none(), py::arg("sampling_budget") = 20000,
          py::arg("ring_bytes") = 4 << 20, py::arg("lanes") = 16,
          py::arg("namespace") = py::none(), py::arg("shm_dir") = py::none(),
          py::arg("clock") = "coarse", py::arg("shm_group") = py::none(),
          py::arg("artifacts") = py::none(), py::arg("labels_stream") = py::none(),
          py::arg("task") = py::none());
  cls.def("flag", &PyStream::flag, py::arg("name"),
          "flag(name) -> bool: whether the agent set the named flag (non-zero) on this stream");
  cls.def("flag_value", &PyStream::flag_value, py::arg("name"),
          "flag_value(name) -> int: the named flag's value (0 when unset)");
  cls.def("on_flag", &PyStream::on_flag, py::arg("name"), py::arg("callback"),
          "on_flag(name, callback): call callback(value) from a background thread (with the GIL)\n"
          "whenever the flag's value changes; polled every 100 ms. Exceptions in the callback are\n"
          "reported with sys.unraisablehook and ignored.");
  cls.def("stats", &PyStream::stats,
          "stats() -> dict: this process's exact counters for the stream, in rows:\n"
          "rows_written (every row passed to write) = rows_committed + rows_sampled_out +\n"
          "rows_dropped (rows_too_large + rows_bad_input + rows_no_lane + rows_no_ring); plus\n"
          "rows_copied (gathered from non-contiguous or byte-swapped input), rows_converted\n"
          "(from lists/numbers via numpy.asarray) and writes_after_close.");
  cls.def_property_readonly("segment_path", &PyStream::segment_path,
                            "The ring's file (None without a ring or once closed)");
  cls.def_property_readonly("name", &PyStream::name);
  cls.def_property_readonly("closed", &PyStream::closed);
  cls.def_property_readonly("has_ring", &PyStream::has_ring);
  cls.def("close", &PyStream::close,
          "Marks the ring closed (the agent drains it) and stops flag callbacks. Idempotent;\n"
          "later writes return WriteResult.dropped and are counted in writes_after_close.");
  cls.def("__enter__", [](py::object self) { return self; });
  cls.def("__exit__", [](PyStream& s, py::args) { s.close(); });
  cls.def("__repr__", &PyStream::repr);
  {
    PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cls.ptr()), &g_write_def);
    if (!descr) throw py::error_already_set();
    cls.attr("write") = py::reinterpret_steal<py::object>(descr);
  }

  m.def("_set_write_results", [](py::object written, py::object sampled_out, py::object dropped) {
    set_write_results(written.ptr(), sampled_out.ptr(), dropped.ptr());
  });
  m.def("_shutdown", &shutdown_all_streams,
        "Closes every stream; run by atexit before the interpreter finalizes.");
  // atexit runs before finalization starts, while SDK threads may still take the GIL safely.
  py::module_::import("atexit").attr("register")(m.attr("_shutdown"));
}
