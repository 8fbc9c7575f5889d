#include "core/time.hpp"

#include <cstdio>
#include <ctime>

namespace mltap::core {

std::uint64_t unix_now_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

std::string format_utc(std::uint64_t unix_ns, UtcStyle style) {
  const auto secs = static_cast<std::time_t>(unix_ns / 1'000'000'000ULL);
  const auto ms = static_cast<unsigned>((unix_ns / 1'000'000ULL) % 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  const char* format = "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ";
  if (style == UtcStyle::basic) format = "%04d%02d%02dT%02d%02d%02d.%03uZ";
  if (style == UtcStyle::readable) format = "%04d-%02d-%02d %02d:%02d:%02d.%03uZ";
  char buf[64];
  std::snprintf(buf, sizeof buf, format, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, ms);
  return buf;
}

}  // namespace mltap::core
