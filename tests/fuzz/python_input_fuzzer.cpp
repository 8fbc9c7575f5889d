// Fuzz target: the Python SDK's input conversion (shm/python/src: tensor_input.cpp, which turns
// NumPy arrays, buffer-protocol objects, lists and numbers into strided views and gathers them,
// and PyStream::write, which shapes them into records for the C++ SDK). That code takes Python
// objects, so it cannot be called without an interpreter: this target embeds CPython, registers
// the _mltap extension compiled into this executable (so the binding is instrumented; CPython
// and NumPy are not), and runs python_input_driver.py, which builds one object per input and
// calls Stream.write on it. torch is not imported: importing it under the fuzzer's sanitizers
// costs seconds per process and its tensors reach the same view/gather code through
// view_of_array (tests/python covers them).
//
// Properties: write() raises only TypeError/ValueError (argument kinds), never anything else,
// even with warnings turned into errors; the stream's counters add up after every write; no
// crash or overrun in the binding.
#include <Python.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "fuzz_support.hpp"

extern "C" PyObject* PyInit__mltap();

namespace {
PyObject* g_run = nullptr;
mltap::fuzz::TempDir* g_dir = nullptr;

[[noreturn]] void python_failed(const char* what) {
  std::fprintf(stderr, "python_input_fuzzer: %s\n", what);
  PyErr_Print();
  std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  PyImport_AppendInittab("_mltap", &PyInit__mltap);
  Py_InitializeEx(0);
  PyObject* sys_path = PySys_GetObject("path");  // borrowed
  PyObject* dir = PyUnicode_FromString(MLTAP_FUZZ_SOURCE_DIR);
  PyList_Insert(sys_path, 0, dir);
  Py_DECREF(dir);
  PyObject* driver = PyImport_ImportModule("python_input_driver");
  if (!driver) python_failed("cannot import python_input_driver");
  // Removed at exit (the streams stay mapped until then; their files may go first).
  static mltap::fuzz::TempDir shm_dir("python");
  g_dir = &shm_dir;
  PyObject* r = PyObject_CallMethod(driver, "setup", "s", g_dir->path().c_str());
  if (!r) python_failed("setup failed");
  Py_DECREF(r);
  g_run = PyObject_GetAttrString(driver, "run");
  if (!g_run) python_failed("no run()");
  Py_DECREF(driver);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  PyObject* bytes = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(data), static_cast<Py_ssize_t>(size));
  PyObject* r = PyObject_CallOneArg(g_run, bytes);
  Py_DECREF(bytes);
  if (!r) python_failed("Stream.write raised something other than TypeError/ValueError, or a check failed");
  Py_DECREF(r);
  return 0;
}

// CPython and NumPy keep interpreter-lifetime allocations that LeakSanitizer reports at exit;
// they are not the binding's. (The binding's own leaks would need a per-input leak check,
// which an embedded interpreter's caches make useless.)
extern "C" const char* __asan_default_options() { return "detect_leaks=0"; }
