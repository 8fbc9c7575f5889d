#include "agent/retention/config.hpp"

namespace mltap::retention {

RetentionConfig parse_retention_config(core::ConfigSection s) {
  RetentionConfig c;
  if (s.is_null()) return c;
  using namespace std::chrono;
  if (auto v = s.get_bool("enabled")) c.enabled = *v;
  if (auto v = s.get_double("keep_share", 0.0, 1.0)) {
    if (*v <= 0.0) s.fail("keep_share", "must be > 0 (to retain nothing, set enabled: false)");
    c.keep_share = *v;
  }
  if (auto v = s.get_int("reservoir", 0, 1'000'000)) c.reservoir = static_cast<std::uint32_t>(*v);
  if (auto v = s.get_duration("bucket", seconds(1), hours(24))) c.bucket = *v;
  if (auto v = s.get_duration("max_age", minutes(1), hours(24 * 366))) c.max_age = *v;
  if (auto v = s.get_bytes("max_stream_bytes", 64ull << 10, 1ull << 40)) c.max_stream_bytes = *v;
  if (auto v = s.get_bytes("max_bytes", 64ull << 10, 1ull << 42)) c.max_bytes = *v;
  if (auto v = s.get_int("max_streams", 1, 4096)) c.max_streams = static_cast<std::uint32_t>(*v);
  if (auto v = s.get_int("max_row_values", 1, 65536))
    c.max_row_values = static_cast<std::uint32_t>(*v);
  if (auto v = s.get_int("max_flags", 0, 100'000'000)) c.max_flags = static_cast<std::uint64_t>(*v);
  s.finish();
  if (c.max_age < c.bucket) s.fail("max_age", "must be at least one bucket");
  return c;
}

}  // namespace mltap::retention
