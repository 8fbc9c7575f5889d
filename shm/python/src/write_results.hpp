// The objects Stream.write returns: mltap.WriteResult members once the package has registered
// them, interned strings before that. Returning a cached object costs one reference increment.
#pragma once

#include <Python.h>

#include "mltap/stream.hpp"

namespace mltap::python {

// New reference to the object for `r`.
PyObject* new_result_ref(WriteResult r) noexcept;
// Replaces the three objects (new references are taken). Returns false with an exception set.
bool set_write_results(PyObject* written, PyObject* sampled_out, PyObject* dropped) noexcept;

}  // namespace mltap::python
