/* Symbols of libmltap.so: only declarations marked MLTAP_API are exported (the C ABI of mltap.h
 * and the C++ API of stream.hpp); the library is built with -fvisibility=hidden,
 * -fvisibility-inlines-hidden and a version script (shm/src/libmltap.map), and
 * tests/ring/check_exports.py fails on any other exported symbol. The static library used by the
 * agent and the Python module exports nothing. */
#ifndef MLTAP_EXPORT_H
#define MLTAP_EXPORT_H

#if defined(MLTAP_BUILDING_SHARED)
#define MLTAP_API __attribute__((visibility("default")))
#else
#define MLTAP_API
#endif

#endif /* MLTAP_EXPORT_H */
