// Turning the Python objects a user passes to Stream.write (NumPy arrays, CPU torch tensors,
// buffer-protocol objects, lists) into a plain strided description the C++ SDK can take, without
// importing NumPy or torch: their types are looked up in sys.modules once the user has imported
// them, so an object of a module that was never imported cannot be one of its tensors.
#pragma once

#include <Python.h>

#include <cstddef>
#include <cstdint>

#include "mltap/format.hpp"

namespace mltap::python {

inline constexpr int kMaxInputDims = 32;  // NumPy's NPY_MAXDIMS; torch allows fewer in practice

// Why an input became bad-input rows instead of a record (each is warned about once per stream).
enum class BadInput : std::uint8_t {
  none = 0,
  dtype,       // element type the ring format has no DType for (object, complex, str, ...)
  device,      // a torch tensor that is not on the CPU (copying it would block on the device)
  layout,      // sparse/quantized/unreadable tensor storage
  conversion,  // a list/number/array-like that NumPy could not turn into a numeric array
  dims,        // a dimension that does not fit the format (> 2^32 - 1)
  count,
};
const char* bad_input_text(BadInput b) noexcept;

// Strided view of the caller's data. `owner` keeps the memory alive (a new reference or null).
struct TensorView {
  const std::uint8_t* data = nullptr;
  format::DType dtype = format::DType::invalid;
  std::uint32_t itemsize = 0;
  int ndim = 0;
  std::int64_t shape[kMaxInputDims];  // first ndim entries valid (not zeroed: hot path)
  std::int64_t strides[kMaxInputDims];  // bytes, first ndim entries valid
  bool c_contiguous = true;
  bool swap_bytes = false;  // stored in the other byte order
  BadInput bad = BadInput::none;
};

// Holds whatever keeps a view's memory alive until the write is done: an exported buffer or a
// converted object. Released on destruction (with the GIL held, as Stream.write runs).
class InputHold {
 public:
  InputHold() = default;
  ~InputHold();
  InputHold(const InputHold&) = delete;
  InputHold& operator=(const InputHold&) = delete;
  Py_buffer* buffer() noexcept { return &buffer_; }
  void buffer_taken() noexcept { has_buffer_ = true; }
  void keep(PyObject* owned) noexcept;  // steals the reference

 private:
  Py_buffer buffer_;  // valid only when has_buffer_ (not zeroed: hot path)
  bool has_buffer_ = false;
  PyObject* kept_ = nullptr;
};

enum class ViewResult { ok, not_array, error };

// Fills `v` from a NumPy array, torch tensor or buffer-protocol object. `ok` with v.bad set means
// "an array, but not one the format can carry". `not_array`: none of those kinds. `error`: a
// Python exception is set (only for failures that are not the data's fault).
ViewResult view_of_array(PyObject* x, TensorView& v, InputHold& hold);

// Converts a list/tuple/number/array-like (__array__) with numpy.asarray(x, dtype) and views
// the result. `numpy_dtype` may be null (NumPy infers it). `not_array` means x is not of a
// convertible kind (e.g. str, dict, None): the caller raises TypeError.
ViewResult view_of_converted(PyObject* x, PyObject* numpy_dtype, TensorView& v, InputHold& hold);

// Whether x is a torch.Tensor (torch already imported by the user).
bool is_torch_tensor(PyObject* x) noexcept;

// Copies rows [first, first + count) of a strided view into `dst` as C-contiguous native-order
// data. With `batch` false the whole view is one row.
void gather_rows(const TensorView& v, bool batch, std::int64_t first, std::int64_t count,
                 std::uint8_t* dst) noexcept;

// Releases the cached module/type references (at interpreter exit).
void clear_input_caches() noexcept;

}  // namespace mltap::python
