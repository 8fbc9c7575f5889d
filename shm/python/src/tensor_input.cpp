#include "tensor_input.hpp"

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
// Only the struct layout and inline accessors: no NumPy C-API table, so no import of NumPy.
#include <numpy/ndarraytypes.h>

#include <cstring>
#include <string_view>

namespace mltap::python {

using format::DType;

const char* bad_input_text(BadInput b) noexcept {
  switch (b) {
    case BadInput::none: return "none";
    case BadInput::dtype: return "an element type the ring format cannot carry (object, complex, str, ...)";
    case BadInput::device: return "a torch tensor that is not on the CPU";
    case BadInput::layout: return "a tensor whose storage cannot be read (sparse, quantized, ...)";
    case BadInput::conversion: return "an object NumPy could not convert to a numeric array";
    case BadInput::dims: return "a dimension larger than 2^32 - 1";
    case BadInput::count: break;
  }
  return "unknown";
}

InputHold::~InputHold() {
  if (has_buffer_) PyBuffer_Release(&buffer_);
  Py_XDECREF(kept_);
}

void InputHold::keep(PyObject* owned) noexcept {
  Py_XDECREF(kept_);
  kept_ = owned;
}

namespace {

// Module-level caches. Only touched with the GIL held.
struct Caches {
  bool numpy_looked_up = false;
  PyObject* ndarray_type = nullptr;  // numpy.ndarray once NumPy is imported
  bool numpy_struct_ok = false;      // NumPy 1.x: the array struct layout of our headers
  PyObject* numpy_module = nullptr;
  PyObject* torch_tensor_type = nullptr;
  struct TorchDType {
    PyObject* object;
    DType dtype;
  };
  TorchDType torch_dtypes[16] = {};
  int torch_dtype_count = 0;
  // Interned attribute names.
  PyObject* s_dtype = nullptr;
  PyObject* s_is_cpu = nullptr;
  PyObject* s_shape = nullptr;
  PyObject* s_is_contiguous = nullptr;
  PyObject* s_data_ptr = nullptr;
  PyObject* s_stride = nullptr;
  PyObject* s_asarray = nullptr;
  PyObject* s_array = nullptr;
  PyObject* s_array_interface = nullptr;
  PyObject* s_dtype_kw = nullptr;
};
Caches g;

PyObject* interned(PyObject*& slot, const char* text) {
  if (!slot) slot = PyUnicode_InternFromString(text);
  return slot;
}

PyObject* loaded_module(const char* name) {
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
  PyObject* m = PyDict_GetItemString(modules, name);  // borrowed, no exception
  return m;
}

void look_up_numpy() {
  if (g.ndarray_type) return;
  PyObject* np = loaded_module("numpy");
  if (!np) return;
  PyObject* t = PyObject_GetAttrString(np, "ndarray");
  if (!t || !PyType_Check(t)) {  // NumPy still importing itself
    Py_XDECREF(t);
    PyErr_Clear();
    return;
  }
  bool v1 = false;
  if (PyObject* ver = PyObject_GetAttrString(np, "__version__")) {
    const char* s = PyUnicode_Check(ver) ? PyUnicode_AsUTF8(ver) : nullptr;
    v1 = s && s[0] == '1' && s[1] == '.';
    Py_DECREF(ver);
  }
  PyErr_Clear();
  g.ndarray_type = t;
  g.numpy_struct_ok = v1;
  Py_INCREF(np);
  g.numpy_module = np;
}

void look_up_torch() {
  if (g.torch_tensor_type) return;
  PyObject* torch = loaded_module("torch");
  if (!torch) return;
  PyObject* t = PyObject_GetAttrString(torch, "Tensor");
  if (!t || !PyType_Check(t)) {
    Py_XDECREF(t);
    PyErr_Clear();
    return;
  }
  static const struct {
    const char* name;
    DType dtype;
  } names[] = {
      {"float32", DType::float32}, {"float64", DType::float64}, {"float16", DType::float16},
      {"bfloat16", DType::bfloat16}, {"int8", DType::int8},     {"int16", DType::int16},
      {"int32", DType::int32},     {"int64", DType::int64},     {"uint8", DType::uint8},
      {"bool", DType::boolean},    {"uint16", DType::uint16},   {"uint32", DType::uint32},
      {"uint64", DType::uint64},
  };
  for (const auto& n : names) {
    PyObject* d = PyObject_GetAttrString(torch, n.name);
    if (!d) {  // e.g. torch.uint16 only exists in newer releases
      PyErr_Clear();
      continue;
    }
    g.torch_dtypes[g.torch_dtype_count++] = {d, n.dtype};
  }
  g.torch_tensor_type = t;
}

bool is_ndarray(PyObject* x) noexcept {
  if (!g.ndarray_type) look_up_numpy();
  return g.ndarray_type &&
         (Py_TYPE(x) == reinterpret_cast<PyTypeObject*>(g.ndarray_type) ||
          PyObject_TypeCheck(x, reinterpret_cast<PyTypeObject*>(g.ndarray_type)));
}

DType dtype_from_kind(char kind, std::int64_t size) noexcept {
  switch (kind) {
    case 'f':
      return size == 2 ? DType::float16 : size == 4 ? DType::float32 : size == 8 ? DType::float64 : DType::invalid;
    case 'i':
      return size == 1 ? DType::int8 : size == 2 ? DType::int16 : size == 4 ? DType::int32 : size == 8 ? DType::int64 : DType::invalid;
    case 'u':
      return size == 1 ? DType::uint8 : size == 2 ? DType::uint16 : size == 4 ? DType::uint32 : size == 8 ? DType::uint64 : DType::invalid;
    case 'b':
      return size == 1 ? DType::boolean : DType::invalid;
    default:
      return DType::invalid;
  }
}

// struct-module format code of a buffer (PEP 3118) -> DType; only single native-size scalars.
DType dtype_from_format(const char* fmt, Py_ssize_t itemsize, bool& swap) noexcept {
  swap = false;
  if (!fmt) fmt = "B";
  if (*fmt == '@' || *fmt == '=' || *fmt == '<') {
    ++fmt;
  } else if (*fmt == '>' || *fmt == '!') {
    swap = itemsize > 1;
    ++fmt;
  }
  if (fmt[0] == '\0' || fmt[1] != '\0') return DType::invalid;
  switch (fmt[0]) {
    case 'e': case 'f': case 'd': return dtype_from_kind('f', itemsize);
    case '?': return dtype_from_kind('b', itemsize);
    case 'b': case 'h': case 'i': case 'l': case 'q': case 'n': return dtype_from_kind('i', itemsize);
    case 'B': case 'H': case 'I': case 'L': case 'Q': case 'N': return dtype_from_kind('u', itemsize);
    default: return DType::invalid;
  }
}

bool compute_c_contiguous(const TensorView& v) noexcept {
  std::int64_t expected = v.itemsize;
  for (int d = v.ndim - 1; d >= 0; --d) {
    if (v.shape[d] == 0) return true;
    if (v.shape[d] != 1 && v.strides[d] != expected) return false;
    expected *= v.shape[d];
  }
  return true;
}

ViewResult view_numpy(PyObject* x, TensorView& v) {
  auto* a = reinterpret_cast<PyArrayObject*>(x);
  v.ndim = PyArray_NDIM(a);
  const npy_intp* dims = PyArray_DIMS(a);
  const npy_intp* strides = PyArray_STRIDES(a);
  for (int d = 0; d < v.ndim && d < kMaxInputDims; ++d) {
    v.shape[d] = dims[d];
    v.strides[d] = strides[d];
  }
  const PyArray_Descr* descr = PyArray_DESCR(a);
  v.dtype = dtype_from_kind(descr->kind, descr->elsize);
  if (v.dtype == DType::invalid) {
    v.bad = BadInput::dtype;
    return ViewResult::ok;
  }
  v.itemsize = format::dtype_size(v.dtype);
  v.swap_bytes = v.itemsize > 1 && PyArray_ISBYTESWAPPED(a);
  v.c_contiguous = PyArray_IS_C_CONTIGUOUS(a);
  v.data = static_cast<const std::uint8_t*>(PyArray_DATA(a));
  return ViewResult::ok;
}

std::int64_t long_of(PyObject* o, bool& ok) {
  const long long r = PyLong_AsLongLong(o);
  if (r == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    ok = false;
  }
  return r;
}

// Attribute/method of a torch tensor; false (exception cleared) when it fails.
PyObject* torch_get(PyObject* x, PyObject* name) {
  PyObject* r = PyObject_GetAttr(x, name);
  if (!r) PyErr_Clear();
  return r;
}
PyObject* torch_call(PyObject* x, PyObject* name) {
  PyObject* r = PyObject_CallMethodNoArgs(x, name);
  if (!r) PyErr_Clear();
  return r;
}

ViewResult view_torch(PyObject* x, TensorView& v) {
  // Shape first: it decides how many rows a refused tensor counts as.
  PyObject* shape = torch_get(x, interned(g.s_shape, "shape"));
  if (!shape || !PyTuple_Check(shape) || PyTuple_GET_SIZE(shape) > kMaxInputDims) {
    Py_XDECREF(shape);
    v.bad = BadInput::layout;
    return ViewResult::ok;
  }
  bool ok = true;
  v.ndim = static_cast<int>(PyTuple_GET_SIZE(shape));
  for (int d = 0; d < v.ndim; ++d) v.shape[d] = long_of(PyTuple_GET_ITEM(shape, d), ok);
  Py_DECREF(shape);
  if (!ok) {
    v.ndim = 0;
    v.bad = BadInput::layout;
    return ViewResult::ok;
  }
  PyObject* dt = torch_get(x, interned(g.s_dtype, "dtype"));
  for (int i = 0; dt && i < g.torch_dtype_count; ++i) {
    if (g.torch_dtypes[i].object == dt) v.dtype = g.torch_dtypes[i].dtype;
  }
  Py_XDECREF(dt);
  if (v.dtype == DType::invalid) {
    v.bad = BadInput::dtype;
    return ViewResult::ok;
  }
  v.itemsize = format::dtype_size(v.dtype);
  PyObject* cpu = torch_get(x, interned(g.s_is_cpu, "is_cpu"));
  const bool on_cpu = cpu == Py_True;
  Py_XDECREF(cpu);
  if (!on_cpu) {
    v.bad = BadInput::device;
    return ViewResult::ok;
  }
  PyObject* contiguous = torch_call(x, interned(g.s_is_contiguous, "is_contiguous"));
  v.c_contiguous = contiguous == Py_True;
  Py_XDECREF(contiguous);
  if (!v.c_contiguous) {
    PyObject* strides = torch_call(x, interned(g.s_stride, "stride"));
    if (!strides || !PyTuple_Check(strides) || PyTuple_GET_SIZE(strides) != v.ndim) {
      Py_XDECREF(strides);
      v.bad = BadInput::layout;
      return ViewResult::ok;
    }
    for (int d = 0; d < v.ndim; ++d) {
      v.strides[d] = long_of(PyTuple_GET_ITEM(strides, d), ok) * v.itemsize;
    }
    Py_DECREF(strides);
  } else {
    std::int64_t s = v.itemsize;
    for (int d = v.ndim - 1; d >= 0; --d) {
      v.strides[d] = s;
      s *= v.shape[d];
    }
  }
  // Sparse and other non-strided layouts refuse data_ptr().
  PyObject* ptr = torch_call(x, interned(g.s_data_ptr, "data_ptr"));
  if (!ptr || !ok) {
    Py_XDECREF(ptr);
    v.bad = BadInput::layout;
    return ViewResult::ok;
  }
  v.data = static_cast<const std::uint8_t*>(PyLong_AsVoidPtr(ptr));
  Py_DECREF(ptr);
  if (PyErr_Occurred()) {
    PyErr_Clear();
    v.bad = BadInput::layout;
  }
  return ViewResult::ok;
}

ViewResult view_buffer(PyObject* x, TensorView& v, InputHold& hold) {
  Py_buffer* b = hold.buffer();
  if (PyObject_GetBuffer(x, b, PyBUF_RECORDS_RO) != 0) {
    // An exporter that cannot describe its items as a plain buffer (e.g. NumPy object or
    // datetime arrays under NumPy 2): an array, but not one the format can carry.
    PyErr_Clear();
    v.bad = BadInput::dtype;
    return ViewResult::ok;
  }
  hold.buffer_taken();
  if (b->ndim > kMaxInputDims) {
    v.bad = BadInput::dims;
    return ViewResult::ok;
  }
  v.ndim = b->ndim;
  for (int d = 0; d < v.ndim; ++d) {
    v.shape[d] = b->shape ? b->shape[d] : b->len / (b->itemsize ? b->itemsize : 1);
  }
  bool swap = false;
  v.dtype = dtype_from_format(b->format, b->itemsize, swap);
  if (v.dtype == DType::invalid) {
    v.bad = BadInput::dtype;
    return ViewResult::ok;
  }
  v.itemsize = format::dtype_size(v.dtype);
  v.swap_bytes = swap;
  if (b->strides) {
    for (int d = 0; d < v.ndim; ++d) v.strides[d] = b->strides[d];
    v.c_contiguous = compute_c_contiguous(v);
  } else {
    std::int64_t s = v.itemsize;
    for (int d = v.ndim - 1; d >= 0; --d) {
      v.strides[d] = s;
      s *= v.shape[d];
    }
    v.c_contiguous = true;
  }
  v.data = static_cast<const std::uint8_t*>(b->buf);
  return ViewResult::ok;
}

template <std::size_t N>
void copy_strided(const std::uint8_t* src, std::int64_t n, std::int64_t stride,
                  std::uint8_t* dst) noexcept {
  for (std::int64_t i = 0; i < n; ++i) std::memcpy(dst + i * N, src + i * stride, N);
}

void copy_dims(const TensorView& v, int dim, const std::uint8_t* src, std::uint8_t*& dst) noexcept {
  if (dim >= v.ndim) {  // a 0-d view: one element
    std::memcpy(dst, src, v.itemsize);
    dst += v.itemsize;
    return;
  }
  const std::int64_t n = v.shape[dim];
  const std::int64_t stride = v.strides[dim];
  if (dim == v.ndim - 1) {
    if (stride == v.itemsize) {
      std::memcpy(dst, src, static_cast<std::size_t>(n) * v.itemsize);
    } else {
      switch (v.itemsize) {
        case 1: copy_strided<1>(src, n, stride, dst); break;
        case 2: copy_strided<2>(src, n, stride, dst); break;
        case 4: copy_strided<4>(src, n, stride, dst); break;
        default: copy_strided<8>(src, n, stride, dst); break;
      }
    }
    dst += n * v.itemsize;
    return;
  }
  for (std::int64_t i = 0; i < n; ++i) copy_dims(v, dim + 1, src + i * stride, dst);
}

void swap_in_place(std::uint8_t* p, std::size_t bytes, std::uint32_t itemsize) noexcept {
  for (std::size_t off = 0; off + itemsize <= bytes; off += itemsize) {
    std::uint8_t* e = p + off;
    for (std::uint32_t i = 0; i < itemsize / 2; ++i) {
      const std::uint8_t t = e[i];
      e[i] = e[itemsize - 1 - i];
      e[itemsize - 1 - i] = t;
    }
  }
}

}  // namespace

bool is_torch_tensor(PyObject* x) noexcept {
  if (!g.torch_tensor_type) look_up_torch();
  return g.torch_tensor_type &&
         PyObject_TypeCheck(x, reinterpret_cast<PyTypeObject*>(g.torch_tensor_type));
}

ViewResult view_of_array(PyObject* x, TensorView& v, InputHold& hold) {
  if (is_ndarray(x)) return g.numpy_struct_ok ? view_numpy(x, v) : view_buffer(x, v, hold);
  if (is_torch_tensor(x)) return view_torch(x, v);
  // bytes/str-like objects are not tensors even though bytes exports a buffer.
  if (PyBytes_Check(x) || PyByteArray_Check(x) || PyUnicode_Check(x)) return ViewResult::not_array;
  if (PyObject_CheckBuffer(x)) return view_buffer(x, v, hold);
  return ViewResult::not_array;
}

ViewResult view_of_converted(PyObject* x, PyObject* numpy_dtype, TensorView& v, InputHold& hold) {
  const bool convertible =
      PyList_Check(x) || PyTuple_Check(x) || PyFloat_Check(x) || PyLong_Check(x) ||
      PyObject_HasAttr(x, interned(g.s_array, "__array__")) ||
      PyObject_HasAttr(x, interned(g.s_array_interface, "__array_interface__"));
  if (!convertible) return ViewResult::not_array;
  look_up_numpy();
  if (!g.numpy_module) {
    PyObject* np = PyImport_ImportModule("numpy");
    if (!np) {
      PyErr_Clear();
      v.bad = BadInput::conversion;
      return ViewResult::ok;
    }
    Py_DECREF(np);
    look_up_numpy();
    if (!g.numpy_module) {
      v.bad = BadInput::conversion;
      return ViewResult::ok;
    }
  }
  PyObject* asarray = PyObject_GetAttr(g.numpy_module, interned(g.s_asarray, "asarray"));
  if (!asarray) {
    PyErr_Clear();
    v.bad = BadInput::conversion;
    return ViewResult::ok;
  }
  PyObject* kwargs = nullptr;
  if (numpy_dtype && numpy_dtype != Py_None) {
    kwargs = PyDict_New();
    if (kwargs) PyDict_SetItem(kwargs, interned(g.s_dtype_kw, "dtype"), numpy_dtype);
  }
  PyObject* args = PyTuple_Pack(1, x);
  PyObject* arr = args ? PyObject_Call(asarray, args, kwargs) : nullptr;
  Py_XDECREF(args);
  Py_XDECREF(kwargs);
  Py_DECREF(asarray);
  if (!arr) {
    PyErr_Clear();
    v.bad = BadInput::conversion;
    return ViewResult::ok;
  }
  hold.keep(arr);
  const ViewResult r = view_of_array(arr, v, hold);
  if (r == ViewResult::not_array) v.bad = BadInput::conversion;
  return r == ViewResult::not_array ? ViewResult::ok : r;
}

void gather_rows(const TensorView& v, bool batch, std::int64_t first, std::int64_t count,
                 std::uint8_t* dst) noexcept {
  std::uint8_t* const start = dst;
  if (batch) {
    for (std::int64_t r = first; r < first + count; ++r) {
      copy_dims(v, 1, v.data + r * v.strides[0], dst);
    }
  } else {
    copy_dims(v, 0, v.data, dst);
  }
  if (v.swap_bytes) swap_in_place(start, static_cast<std::size_t>(dst - start), v.itemsize);
}

void clear_input_caches() noexcept {
  Py_CLEAR(g.ndarray_type);
  Py_CLEAR(g.numpy_module);
  Py_CLEAR(g.torch_tensor_type);
  for (int i = 0; i < g.torch_dtype_count; ++i) Py_CLEAR(g.torch_dtypes[i].object);
  g.torch_dtype_count = 0;
}

}  // namespace mltap::python
