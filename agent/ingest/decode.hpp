// Tensor payloads (any supported dtype, little-endian) to doubles for the statistics and
// detectors. NaN and Inf survive; integers convert exactly up to 2^53.
#pragma once

#include <cstdint>
#include <span>

#include "mltap/format.hpp"

namespace mltap::ingest {

// Converts `count` elements of `dtype` from `src` (unaligned is fine) into `dst`.
void decode_to_double(format::DType dtype, const std::uint8_t* src, std::size_t count,
                      double* dst) noexcept;

double half_to_double(std::uint16_t h) noexcept;
double bfloat16_to_double(std::uint16_t b) noexcept;

}  // namespace mltap::ingest
