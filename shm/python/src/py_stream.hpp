// mltap.Stream: the Python face of mltap::Stream. Construction, flags and statistics go through
// pybind11; write() is a raw METH_FASTCALL method (see module.cpp) because pybind11's generic
// argument conversion alone costs more than the whole C++ write.
#pragma once

#include <pybind11/pybind11.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mltap/stream.hpp"
#include "tensor_input.hpp"

namespace mltap::python {

namespace py = pybind11;

// One on_flag registration. The C++ SDK's std::function only holds a raw pointer to it, so that
// no Python object is ever copied or destroyed on the SDK's thread without the GIL.
struct FlagCallback {
  py::object callable;
  class PyStream* owner = nullptr;
  std::atomic<bool> live{true};
};

class PyStream {
 public:
  // record_ndim: dims of one declared record (1 when undeclared).
  PyStream(std::string name, StreamOptions options, std::uint32_t record_ndim,
           py::object list_dtype);
  ~PyStream();
  PyStream(const PyStream&) = delete;
  PyStream& operator=(const PyStream&) = delete;

  // Returns a new reference to the WriteResult, or null with a Python exception set (only for
  // argument errors; see README "What raises and what is counted").
  PyObject* write(PyObject* x, PyObject* trace_ids);

  bool flag(const std::string& name) const;
  std::uint32_t flag_value(const std::string& name) const;
  void on_flag(const std::string& name, py::object callback);
  py::dict stats() const;
  py::object segment_path() const;
  const std::string& name() const noexcept { return name_; }
  bool closed() const noexcept { return !stream_; }
  bool has_ring() const noexcept { return stream_ && stream_->has_ring(); }
  std::string repr() const;
  // Idempotent. Must hold the GIL; releases it while the SDK joins its flag thread.
  void close();

 private:
  void warn_once(std::uint32_t key, const char* text);
  WriteResult write_view(const TensorView& v, std::uint32_t* row_shape, std::size_t row_ndim,
                         std::uint64_t rows, bool batch, std::span<const std::uint64_t> ids);
  bool declared_shape_differs(const std::uint32_t* row_shape, std::size_t row_ndim) const noexcept;

  std::unique_ptr<Stream> stream_;
  std::string name_;
  std::string component_;
  std::uint32_t record_ndim_ = 1;  // dims of one record: inputs with more dims are batches
  std::vector<std::uint32_t> declared_shape_;  // a record's declared shape (empty: any)
  bool one_value_records_ = false; // declared record shape [1]: a 1-D input is a batch
  py::object list_dtype_;          // dtype for numpy.asarray of lists (None: inferred)
  std::uint64_t max_record_bytes_ = 0;
  // Binding-side counters; the GIL serialises writers (atomics keep reads well-defined).
  std::atomic<std::uint64_t> rows_copied_{0};
  std::atomic<std::uint64_t> rows_converted_{0};
  std::atomic<std::uint64_t> writes_after_close_{0};
  StreamStats final_stats_{};  // counters at close()
  std::uint32_t warned_ = 0;   // bit per BadInput / extra reason already warned about
  std::vector<std::unique_ptr<FlagCallback>> callbacks_;
  pid_t flag_thread_pid_ = 0;  // process whose SDK thread runs our callbacks
};

// Called from an atexit handler, before the interpreter starts finalizing: closes every stream so
// that no SDK thread tries to take the GIL of a finalizing interpreter.
void shutdown_all_streams();

}  // namespace mltap::python
