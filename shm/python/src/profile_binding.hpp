// Binds mltap::detect::ReferenceProfile as mltap.Profile (built when agent/detectors exists).
#pragma once

#include <pybind11/pybind11.h>

namespace mltap::python {

void bind_profile(pybind11::module_& m);

}  // namespace mltap::python
