#include "py_stream.hpp"

#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <limits>
#include <system_error>
#include <thread>
#include <unordered_set>

#include "write_results.hpp"

namespace mltap::python {

namespace {

using format::DType;

constexpr std::uint64_t kChunkBytes = 1u << 20;         // rows gathered per SDK call
constexpr std::size_t kScratchKeepBytes = 16u << 20;    // larger scratch is freed after use
constexpr std::uint32_t kWarnTraceIds = 1u << 16;
constexpr std::uint32_t kWarnShape = 1u << 17;
constexpr std::uint32_t kWarnDeclaredShape = 1u << 18;

// "(5,)", "(3, 4)": a shape as Python prints it.
std::string shape_text(const std::uint32_t* shape, std::size_t ndim) {
  std::string out = "(";
  for (std::size_t d = 0; d < ndim; ++d) {
    if (d > 0) out += ", ";
    out += std::to_string(shape[d]);
  }
  return out + (ndim == 1 ? ",)" : ")");
}

std::atomic<bool> g_shutdown{false};
// Live streams, for the atexit shutdown. Mutated with the GIL held; leaked so it outlives
// static destruction.
std::unordered_set<PyStream*>& live_streams() {
  static auto* s = new std::unordered_set<PyStream*>();
  return *s;
}

// The stream whose flag callback this thread is running (close() from inside it would join
// the very thread it runs on).
thread_local const PyStream* t_in_callback_of = nullptr;
// Reused per thread so that steady-state writes do not allocate.
thread_local std::vector<std::uint64_t> t_ids;
thread_local std::vector<std::uint8_t> t_scratch;

// Trace ids as the SDK wants them: empty, or one per row.
struct TraceIds {
  const std::uint64_t* data = nullptr;
  std::size_t count = 0;
  std::uint64_t single = 0;
  std::span<const std::uint64_t> span() const noexcept { return {data, count}; }
};

// A Python int in [-2^63, 2^64) -> its 64-bit pattern. False with ValueError/TypeError set.
bool u64_of_int(PyObject* o, std::uint64_t& out) {
  int overflow = 0;
  const long long s = PyLong_AsLongLongAndOverflow(o, &overflow);
  if (overflow == 0) {
    if (s == -1 && PyErr_Occurred()) return false;
    out = static_cast<std::uint64_t>(s);
    return true;
  }
  if (overflow > 0) {
    const unsigned long long u = PyLong_AsUnsignedLongLong(o);
    if (!(u == static_cast<unsigned long long>(-1) && PyErr_Occurred())) {
      out = u;
      return true;
    }
    PyErr_Clear();
  }
  PyErr_SetString(PyExc_ValueError,
                  "mltap: a trace id must fit in 64 bits (an int in [-2**63, 2**64))");
  return false;
}

bool integer_dtype(DType t) noexcept {
  switch (t) {
    case DType::int8: case DType::int16: case DType::int32: case DType::int64:
    case DType::uint8: case DType::uint16: case DType::uint32: case DType::uint64:
      return true;
    default:
      return false;
  }
}

std::uint64_t element_as_u64(const std::uint8_t* p, DType t) noexcept {
  switch (t) {
    case DType::int8: { std::int8_t v; std::memcpy(&v, p, 1); return static_cast<std::uint64_t>(std::int64_t{v}); }
    case DType::int16: { std::int16_t v; std::memcpy(&v, p, 2); return static_cast<std::uint64_t>(std::int64_t{v}); }
    case DType::int32: { std::int32_t v; std::memcpy(&v, p, 4); return static_cast<std::uint64_t>(std::int64_t{v}); }
    case DType::uint8: return p[0];
    case DType::uint16: { std::uint16_t v; std::memcpy(&v, p, 2); return v; }
    case DType::uint32: { std::uint32_t v; std::memcpy(&v, p, 4); return v; }
    default: { std::uint64_t v; std::memcpy(&v, p, 8); return v; }
  }
}

// trace_ids= : None, an int, a 1-D integer array/tensor/buffer, or a sequence of ints.
// Wrong kinds are programming errors and raise; a wrong *length* is the data's and is counted
// by the SDK as bad input.
bool parse_trace_ids(PyObject* o, TraceIds& t, InputHold& hold) {
  if (o == Py_None) return true;
  if (PyLong_Check(o)) {
    if (!u64_of_int(o, t.single)) return false;
    t.data = &t.single;
    t.count = 1;
    return true;
  }
  if (PyFloat_Check(o) || PyUnicode_Check(o) || PyBytes_Check(o) || PyByteArray_Check(o)) {
    PyErr_Format(PyExc_TypeError,
                 "mltap: trace_ids must be an int or a 1-D sequence/array of ints, not %s",
                 Py_TYPE(o)->tp_name);
    return false;
  }
  TensorView v;
  const ViewResult r = view_of_array(o, v, hold);
  if (r == ViewResult::error) return false;
  if (r == ViewResult::ok) {
    if (v.bad != BadInput::none || !integer_dtype(v.dtype)) {
      PyErr_SetString(PyExc_TypeError,
                      "mltap: trace_ids must hold integers (int8..int64, uint8..uint64)");
      return false;
    }
    if (v.ndim > 1) {
      PyErr_Format(PyExc_ValueError, "mltap: trace_ids must be 1-D, got %d dimensions", v.ndim);
      return false;
    }
    if (v.ndim == 0) {
      t.single = element_as_u64(v.data, v.dtype);
      if (v.swap_bytes) t.single = __builtin_bswap64(t.single) >> (64 - 8 * v.itemsize);
      t.data = &t.single;
      t.count = 1;
      return true;
    }
    const auto n = static_cast<std::size_t>(v.shape[0]);
    if (v.itemsize == 8 && !v.swap_bytes && (v.strides[0] == 8 || n <= 1)) {
      t.data = reinterpret_cast<const std::uint64_t*>(v.data);  // int64 ids: their bit pattern
      t.count = n;
      return true;
    }
    t_ids.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      std::uint8_t e[8];
      std::memcpy(e, v.data + static_cast<std::int64_t>(i) * v.strides[0], v.itemsize);
      if (v.swap_bytes) std::reverse(e, e + v.itemsize);
      t_ids[i] = element_as_u64(e, v.dtype);
    }
    t.data = t_ids.data();
    t.count = n;
    return true;
  }
  if (PyList_Check(o) || PyTuple_Check(o)) {
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
    PyObject** items = PySequence_Fast_ITEMS(o);
    t_ids.resize(static_cast<std::size_t>(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
      if (!PyLong_Check(items[i])) {
        PyErr_Format(PyExc_TypeError, "mltap: trace_ids[%zd] is %s, not an int", i,
                     Py_TYPE(items[i])->tp_name);
        return false;
      }
      if (!u64_of_int(items[i], t_ids[static_cast<std::size_t>(i)])) return false;
    }
    t.data = t_ids.data();
    t.count = static_cast<std::size_t>(n);
    return true;
  }
  PyErr_Format(PyExc_TypeError,
               "mltap: trace_ids must be an int or a 1-D sequence/array of ints, not %s",
               Py_TYPE(o)->tp_name);
  return false;
}

WriteResult combine(WriteResult so_far, WriteResult next, bool first) noexcept {
  if (first) return next;
  if (so_far == WriteResult::written || next == WriteResult::written) return WriteResult::written;
  if (so_far == WriteResult::dropped || next == WriteResult::dropped) return WriteResult::dropped;
  return WriteResult::sampled_out;
}

}  // namespace

PyStream::PyStream(std::string name, StreamOptions options, std::uint32_t record_ndim,
                   py::object list_dtype)
    : name_(std::move(name)),
      component_(options.component),
      record_ndim_(record_ndim),
      list_dtype_(std::move(list_dtype)),
      max_record_bytes_(options.ring_bytes / 2) {
  const bool one_feature = options.row_shape.empty() && options.features.size() == 1;
  const bool shape_one = options.row_shape.size() == 1 && options.row_shape[0] == 1;
  one_value_records_ = one_feature || shape_one;
  declared_shape_ = options.row_shape;
  if (declared_shape_.empty() && !options.features.empty()) {
    declared_shape_ = {static_cast<std::uint32_t>(options.features.size())};
  }
  stream_ = std::make_unique<Stream>(name_, std::move(options));  // throws invalid_argument
  live_streams().insert(this);
}

PyStream::~PyStream() { close(); }

void PyStream::close() {
  if (!stream_) return;
  live_streams().erase(this);
  final_stats_ = stream_->stats();
  std::unique_ptr<Stream> doomed = std::move(stream_);
  if (flag_thread_pid_ == 0) {
    doomed.reset();  // no SDK thread: nothing can wait for the GIL
  } else if (t_in_callback_of == this) {
    // Called from our own flag callback, i.e. on the SDK thread, which cannot join itself: a
    // helper thread destroys the stream once the callback has returned. The callables are
    // released here, with the GIL; the helper then needs no Python.
    for (auto& cb : callbacks_) {
      cb->live.store(false, std::memory_order_relaxed);
      cb->callable = py::object();
    }
    try {
      std::thread([stream = std::move(doomed), callbacks = std::move(callbacks_)]() mutable {
        stream.reset();
        callbacks.clear();
      }).detach();
    } catch (const std::system_error&) {
      for (auto& cb : callbacks_) (void)cb.release();  // no thread: leave both alive, inert
      (void)doomed.release();
    }
    callbacks_.clear();
    return;
  } else if (flag_thread_pid_ != ::getpid()) {
    // A forked child: the SDK's thread handle names a thread of the parent; joining it is
    // undefined. The C++ stream and its (inert) callbacks are left alive; the agent removes the
    // child's segment after its dead-producer grace period.
    for (auto& cb : callbacks_) cb->live.store(false, std::memory_order_relaxed);
    (void)doomed.release();
    for (auto& cb : callbacks_) (void)cb.release();
    callbacks_.clear();
    return;
  } else {
    // The SDK joins its flag thread, which may be waiting for the GIL to run a callback.
    PyThreadState* state = PyEval_SaveThread();
    doomed.reset();
    PyEval_RestoreThread(state);
  }
  callbacks_.clear();  // GIL held: the callables are released safely
}

void PyStream::warn_once(std::uint32_t key, const char* text) {
  if (warned_ & key) return;
  warned_ |= key;
  char msg[512];
  std::snprintf(msg, sizeof msg,
                "mltap: stream '%s': rows counted as bad input (stats()['rows_bad_input']): %s "
                "(warned once per stream and cause)",
                name_.c_str(), text);
  // A warnings filter set to "error" must not turn write() into a raising call.
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  if (PyErr_WarnEx(PyExc_RuntimeWarning, msg, 1) != 0) PyErr_Clear();
  PyErr_Restore(type, value, tb);
}

// The SDK counts records of another shape than the declared one as bad input; knowing it here
// spares gathering them and lets the warning say why.
bool PyStream::declared_shape_differs(const std::uint32_t* row_shape,
                                      std::size_t row_ndim) const noexcept {
  return !declared_shape_.empty() &&
         !std::equal(row_shape, row_shape + row_ndim, declared_shape_.begin(), declared_shape_.end());
}

WriteResult PyStream::write_view(const TensorView& v, std::uint32_t* row_shape,
                                 std::size_t row_ndim, std::uint64_t rows, bool batch,
                                 std::span<const std::uint64_t> ids) {
  const std::span<const std::uint32_t> shape(row_shape, row_ndim);
  if (v.c_contiguous && !v.swap_bytes) {
    return stream_->write_tensor(v.data, v.dtype, shape, static_cast<std::size_t>(rows), ids);
  }
  std::uint64_t row_bytes = v.itemsize;
  for (std::size_t d = 0; d < row_ndim && row_bytes <= max_record_bytes_; ++d) row_bytes *= row_shape[d];
  // Inputs the SDK refuses on their description alone (no row bytes, rows too large, too many
  // dims, trace ids of another length) go to it uncopied: it counts them before reading data.
  if (row_bytes == 0 || row_bytes > max_record_bytes_ || row_ndim > format::kMaxRowDims ||
      rows > 0xFFFFFFFFu || (!ids.empty() && ids.size() != rows) || rows == 0 ||
      declared_shape_differs(row_shape, row_ndim)) {
    return stream_->write_tensor(v.data, v.dtype, shape, static_cast<std::size_t>(rows), ids);
  }
  rows_copied_.store(rows_copied_.load(std::memory_order_relaxed) + rows, std::memory_order_relaxed);
  const std::uint64_t chunk_rows = std::max<std::uint64_t>(1, kChunkBytes / row_bytes);
  const std::uint64_t first_chunk = std::min(rows, chunk_rows);
  if (t_scratch.size() < first_chunk * row_bytes) t_scratch.resize(first_chunk * row_bytes);
  WriteResult result = WriteResult::dropped;
  for (std::uint64_t done = 0; done < rows;) {
    const std::uint64_t n = std::min(chunk_rows, rows - done);
    gather_rows(v, batch, static_cast<std::int64_t>(done), static_cast<std::int64_t>(n),
                t_scratch.data());
    const auto chunk_ids = ids.empty() ? ids : ids.subspan(done, n);
    const WriteResult r = stream_->write_tensor(t_scratch.data(), v.dtype, shape,
                                                static_cast<std::size_t>(n), chunk_ids);
    result = combine(result, r, done == 0);
    done += n;
  }
  if (t_scratch.capacity() > kScratchKeepBytes) std::vector<std::uint8_t>().swap(t_scratch);
  return result;
}

PyObject* PyStream::write(PyObject* x, PyObject* trace_ids) {
  if (!stream_) {
    // Writing after close() is a shutdown race in a serving process, not worth an exception.
    writes_after_close_.store(writes_after_close_.load(std::memory_order_relaxed) + 1,
                              std::memory_order_relaxed);
    return new_result_ref(WriteResult::dropped);
  }
  TensorView v;
  InputHold hold;
  bool converted = false;
  ViewResult r = view_of_array(x, v, hold);
  if (r == ViewResult::not_array) {
    r = view_of_converted(x, list_dtype_.ptr(), v, hold);
    converted = true;
  }
  if (r == ViewResult::error) return nullptr;
  if (r == ViewResult::not_array) {
    PyErr_Format(PyExc_TypeError,
                 "mltap: Stream.write() takes a NumPy array, a CPU torch.Tensor, a buffer-protocol "
                 "object, a list/tuple or a number, not %s",
                 Py_TYPE(x)->tp_name);
    return nullptr;
  }
  TraceIds ids;
  InputHold ids_hold;
  if (!parse_trace_ids(trace_ids, ids, ids_hold)) return nullptr;
  if (!stream_) {
    // Python code run above (an __array__ method, a finalizer) closed the stream.
    writes_after_close_.store(writes_after_close_.load(std::memory_order_relaxed) + 1,
                              std::memory_order_relaxed);
    return new_result_ref(WriteResult::dropped);
  }

  // Records: an input with the declared record dims (or fewer) is one record; one more leading
  // dim makes it a batch of records. 0-d inputs are one record of one value. A stream declaring
  // one value per record (labels, a single score) takes a 1-D array as that many records.
  std::uint32_t row_shape[kMaxInputDims];
  std::size_t row_ndim = 0;
  std::uint64_t rows = 1;
  bool batch = false;
  if (v.ndim <= 0) {
    row_shape[0] = 1;
    row_ndim = 1;
  } else {
    batch = static_cast<std::uint32_t>(v.ndim) > record_ndim_ || (one_value_records_ && v.ndim == 1);
    const int first = batch ? 1 : 0;
    if (batch) rows = static_cast<std::uint64_t>(std::max<std::int64_t>(0, v.shape[0]));
    for (int d = first; d < v.ndim; ++d) {
      if (v.shape[d] < 0 || v.shape[d] > 0xFFFFFFFFll) {
        if (v.bad == BadInput::none) v.bad = BadInput::dims;
        row_shape[row_ndim++] = 0;
      } else {
        row_shape[row_ndim++] = static_cast<std::uint32_t>(v.shape[d]);
      }
    }
    if (row_ndim == 0) {  // a batch of scalars: one value per record
      row_shape[0] = 1;
      row_ndim = 1;
    }
  }
  if (converted) {
    rows_converted_.store(rows_converted_.load(std::memory_order_relaxed) + rows,
                          std::memory_order_relaxed);
  }
  // Warnings are emitted after the SDK call: a warning can run Python code (filters, hooks)
  // that writes again on this thread and reuses the per-thread id and scratch buffers.
  if (v.bad != BadInput::none) {
    // DType::invalid makes the SDK count the rows as written and as bad input, exactly.
    const WriteResult res = stream_->write_tensor(nullptr, DType::invalid,
                                                  std::span<const std::uint32_t>(row_shape, row_ndim),
                                                  static_cast<std::size_t>(rows), {});
    warn_once(1u << static_cast<unsigned>(v.bad), bad_input_text(v.bad));
    return new_result_ref(res);
  }
  std::uint32_t warn_key = 0;
  char warn_text[256];
  if (rows > 0 && ids.count != 0 && ids.count != rows) {
    warn_key = kWarnTraceIds;
    std::snprintf(warn_text, sizeof warn_text, "trace_ids has %zu ids for %" PRIu64 " rows",
                  ids.count, rows);
  } else if (rows > 0 && (row_ndim > format::kMaxRowDims ||
                          std::find(row_shape, row_shape + row_ndim, 0u) != row_shape + row_ndim)) {
    warn_key = kWarnShape;
    std::snprintf(warn_text, sizeof warn_text, "a record shape with more than 6 dims or an empty dim");
  } else if (rows > 0 && declared_shape_differs(row_shape, row_ndim)) {
    warn_key = kWarnDeclaredShape;
    std::snprintf(warn_text, sizeof warn_text, "a record of shape %s for a stream declaring %s",
                  shape_text(row_shape, std::min<std::size_t>(row_ndim, 8)).c_str(),
                  shape_text(declared_shape_.data(), declared_shape_.size()).c_str());
  }
  const WriteResult res = write_view(v, row_shape, row_ndim, rows, batch, ids.span());
  if (warn_key != 0) warn_once(warn_key, warn_text);
  return new_result_ref(res);
}

bool PyStream::flag(const std::string& name) const { return flag_value(name) != 0; }

std::uint32_t PyStream::flag_value(const std::string& name) const {
  return stream_ ? stream_->flag_value(name) : 0;
}

namespace {
void invoke_flag_callback(FlagCallback* cb, std::uint32_t value) noexcept {
  // Never touch a finalizing interpreter: a thread taking its GIL is terminated mid-C++.
  if (g_shutdown.load(std::memory_order_acquire) || !cb->live.load(std::memory_order_relaxed) ||
      !Py_IsInitialized() || _Py_IsFinalizing()) {
    return;
  }
  PyGILState_STATE gil = PyGILState_Ensure();
  if (cb->live.load(std::memory_order_relaxed)) {
    const PyStream* before = t_in_callback_of;
    t_in_callback_of = cb->owner;
    PyObject* arg = PyLong_FromUnsignedLong(value);
    PyObject* result = arg ? PyObject_CallOneArg(cb->callable.ptr(), arg) : nullptr;
    Py_XDECREF(arg);
    if (result) {
      Py_DECREF(result);
    } else {
      PyErr_WriteUnraisable(cb->callable.ptr());  // reported like an exception in __del__
    }
    t_in_callback_of = before;
  }
  PyGILState_Release(gil);
}
}  // namespace

void PyStream::on_flag(const std::string& name, py::object callback) {
  if (!stream_) throw py::value_error("mltap: on_flag() on a closed stream");
  if (g_shutdown.load(std::memory_order_acquire)) {
    throw std::runtime_error("mltap: on_flag() while the interpreter is shutting down");
  }
  if (!PyCallable_Check(callback.ptr())) {
    throw py::type_error("mltap: on_flag() callback must be callable, not " +
                         std::string(Py_TYPE(callback.ptr())->tp_name));
  }
  auto cb = std::make_unique<FlagCallback>();
  cb->callable = std::move(callback);
  cb->owner = this;
  FlagCallback* raw = cb.get();
  callbacks_.push_back(std::move(cb));
  const bool ok = stream_->on_flag(name, [raw](std::uint32_t v) { invoke_flag_callback(raw, v); });
  if (!ok) {
    callbacks_.pop_back();
    throw py::value_error("mltap: invalid flag name '" + name +
                          "': 1..31 printable ASCII characters without quotes or backslash");
  }
  if (flag_thread_pid_ == 0) flag_thread_pid_ = ::getpid();
}

py::dict PyStream::stats() const {
  const StreamStats s = stream_ ? stream_->stats() : final_stats_;
  py::dict d;
  d["rows_written"] = s.rows_written;
  d["rows_committed"] = s.rows_committed;
  d["rows_sampled_out"] = s.rows_sampled_out;
  d["rows_too_large"] = s.rows_too_large;
  d["rows_bad_input"] = s.rows_bad_input;
  d["rows_no_lane"] = s.rows_no_lane;
  d["rows_no_ring"] = s.rows_no_ring;
  d["rows_dropped"] = s.rows_too_large + s.rows_bad_input + s.rows_no_lane + s.rows_no_ring;
  d["rows_copied"] = rows_copied_.load(std::memory_order_relaxed);
  d["rows_converted"] = rows_converted_.load(std::memory_order_relaxed);
  d["writes_after_close"] = writes_after_close_.load(std::memory_order_relaxed);
  return d;
}

py::object PyStream::segment_path() const {
  if (!stream_ || !stream_->has_ring()) return py::none();
  return py::str(stream_->segment_path());
}

std::string PyStream::repr() const {
  std::string r = "<mltap.Stream '" + name_ + "' component='" + component_ + "'";
  if (!stream_) return r + " closed>";
  if (!stream_->has_ring()) return r + " (no ring)>";
  return r + " segment='" + stream_->segment_path() + "'>";
}

void shutdown_all_streams() {
  g_shutdown.store(true, std::memory_order_release);
  // close() erases from the set: iterate over a copy.
  const std::vector<PyStream*> streams(live_streams().begin(), live_streams().end());
  for (PyStream* s : streams) s->close();
}

}  // namespace mltap::python
