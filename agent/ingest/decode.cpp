#include "agent/ingest/decode.hpp"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

namespace mltap::ingest {

double half_to_double(std::uint16_t h) noexcept {
  const int sign = (h >> 15) & 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  double v;
  if (exp == 0) {
    v = std::ldexp(static_cast<double>(mant), -24);  // subnormal
  } else if (exp == 31) {
    v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  } else {
    v = std::ldexp(static_cast<double>(mant | 0x400), exp - 25);
  }
  return sign ? -v : v;
}

double bfloat16_to_double(std::uint16_t b) noexcept {
  const std::uint32_t bits = static_cast<std::uint32_t>(b) << 16;
  return static_cast<double>(std::bit_cast<float>(bits));
}

namespace {
template <class T>
void convert(const std::uint8_t* src, std::size_t n, double* dst) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, src + i * sizeof(T), sizeof(T));
    dst[i] = static_cast<double>(v);
  }
}
}  // namespace

void decode_to_double(format::DType dtype, const std::uint8_t* src, std::size_t n,
                      double* dst) noexcept {
  using format::DType;
  switch (dtype) {
    case DType::float32: convert<float>(src, n, dst); break;
    case DType::float64: convert<double>(src, n, dst); break;
    case DType::int32: convert<std::int32_t>(src, n, dst); break;
    case DType::int64: convert<std::int64_t>(src, n, dst); break;
    case DType::uint8: convert<std::uint8_t>(src, n, dst); break;
    case DType::int8: convert<std::int8_t>(src, n, dst); break;
    case DType::int16: convert<std::int16_t>(src, n, dst); break;
    case DType::uint16: convert<std::uint16_t>(src, n, dst); break;
    case DType::uint32: convert<std::uint32_t>(src, n, dst); break;
    case DType::uint64: convert<std::uint64_t>(src, n, dst); break;
    case DType::boolean:
      for (std::size_t i = 0; i < n; ++i) dst[i] = src[i] != 0 ? 1.0 : 0.0;
      break;
    case DType::float16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = half_to_double(h);
      }
      break;
    case DType::bfloat16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t b;
        std::memcpy(&b, src + 2 * i, 2);
        dst[i] = bfloat16_to_double(b);
      }
      break;
    case DType::invalid:
      for (std::size_t i = 0; i < n; ++i) dst[i] = std::numeric_limits<double>::quiet_NaN();
      break;
  }
}

}  // namespace mltap::ingest
