// C ABI over the C++ SDK. No exception crosses this boundary. The write functions compile the
// SDK's fast path (write_path.hpp) into themselves: a C write costs what a C++ write costs.
#include "mltap/mltap.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>

#include "mltap/stream.hpp"
#include "stream_options.hpp"
#include "write_path.hpp"

struct mltap_stream {
  mltap::Stream stream;
  mltap::detail::StreamCore* core = nullptr;  // the stream's state, for the write path
};

namespace {

// A C caller may store any number in an enum field (tests do: a task of 7 must be refused, not
// be undefined behaviour): read the field's bits as an integer, never as the C++ enum.
template <class E>
std::uint32_t enum_bits(const E& field) noexcept {
  static_assert(sizeof(E) == sizeof(std::uint32_t));
  std::uint32_t v = 0;
  std::memcpy(&v, &field, sizeof v);
  return v;
}
void set_error(char* buf, size_t len, const char* msg) {
  if (buf && len > 0) std::snprintf(buf, len, "%s", msg);
}
}  // namespace

extern "C" {

void mltap_stream_options_init(mltap_stream_options* o) {
  if (!o) return;
  std::memset(o, 0, sizeof *o);
  const mltap::StreamOptions d;
  o->struct_size = sizeof *o;
  o->kind = MLTAP_KIND_FEATURES;
  o->sampling_budget = d.sampling_budget;
  o->ring_bytes = d.ring_bytes;
  o->lanes = d.lanes;
}

int mltap_stream_open(const char* name, const mltap_stream_options* options, mltap_stream** out,
                      char* errbuf, size_t errbuf_len) {
  if (!out) {
    set_error(errbuf, errbuf_len, "mltap_stream_open: out is NULL");
    return MLTAP_ERR_INVALID;
  }
  *out = nullptr;
  if (!name) {
    set_error(errbuf, errbuf_len, "mltap_stream_open: name is NULL");
    return MLTAP_ERR_INVALID;
  }
  mltap_stream_options o;
  mltap_stream_options_init(&o);
  if (options) {
    if (options->struct_size < offsetof(mltap_stream_options, shm_group) + sizeof(const char*) ||
        options->struct_size > sizeof o) {
      set_error(errbuf, errbuf_len, "mltap_stream_open: options.struct_size is wrong; call mltap_stream_options_init");
      return MLTAP_ERR_INVALID;
    }
    std::memcpy(&o, options, options->struct_size);
  }
  try {
    mltap::StreamOptions so;
    if (o.component) so.component = o.component;
    so.kind = static_cast<mltap::StreamKind>(enum_bits(o.kind));
    if (o.feature_count > 0 && !o.feature_names) {
      set_error(errbuf, errbuf_len, "mltap_stream_open: feature_count > 0 but feature_names is NULL");
      return MLTAP_ERR_INVALID;
    }
    for (uint32_t i = 0; i < o.feature_count; ++i) {
      if (!o.feature_names[i]) {
        set_error(errbuf, errbuf_len, "mltap_stream_open: a feature name is NULL");
        return MLTAP_ERR_INVALID;
      }
      so.features.emplace_back(o.feature_names[i]);
    }
    so.dtype = static_cast<mltap::DType>(o.dtype);
    if (o.row_ndim > 0) {
      if (!o.row_shape) {
        set_error(errbuf, errbuf_len, "mltap_stream_open: row_ndim > 0 but row_shape is NULL");
        return MLTAP_ERR_INVALID;
      }
      so.row_shape.assign(o.row_shape, o.row_shape + std::min<uint32_t>(o.row_ndim, 7));
    }
    so.sampling_budget = o.sampling_budget;
    so.ring_bytes = o.ring_bytes;
    so.lanes = o.lanes;
    if (o.ns) so.ns = o.ns;
    if (o.shm_dir) so.shm_dir = o.shm_dir;
    so.clock = o.precise_clock ? mltap::format::ClockKind::realtime
                               : mltap::format::ClockKind::realtime_coarse;
    if (o.shm_group) so.shm_group = o.shm_group;
    if (o.artifact_count > 0 && !o.artifacts) {
      set_error(errbuf, errbuf_len, "mltap_stream_open: artifact_count > 0 but artifacts is NULL");
      return MLTAP_ERR_INVALID;
    }
    for (uint32_t i = 0; i < o.artifact_count; ++i) {
      if (!o.artifacts[i]) {
        set_error(errbuf, errbuf_len, "mltap_stream_open: an artifact path is NULL");
        return MLTAP_ERR_INVALID;
      }
      so.artifacts.emplace_back(o.artifacts[i]);
    }
    so.task = static_cast<mltap::format::Task>(enum_bits(o.task));
    if (o.labels_stream) so.labels_stream = o.labels_stream;
    auto* s = new mltap_stream{mltap::Stream(name, std::move(so))};
    s->core = mltap::detail::Access::core(s->stream);
    *out = s;
    return 0;
  } catch (const mltap::detail::EnvironmentError& e) {
    set_error(errbuf, errbuf_len, e.what());
    return MLTAP_ERR_ENVIRONMENT;
  } catch (const std::bad_alloc&) {
    set_error(errbuf, errbuf_len, "mltap_stream_open: out of memory");
    return MLTAP_ERR_NOMEM;
  } catch (const std::exception& e) {
    set_error(errbuf, errbuf_len, e.what());
    return MLTAP_ERR_INVALID;
  } catch (...) {
    set_error(errbuf, errbuf_len, "mltap_stream_open: unknown error");
    return MLTAP_ERR_INVALID;
  }
}

void mltap_stream_close(mltap_stream* stream) { delete stream; }

static_assert(static_cast<int>(mltap::WriteResult::written) == MLTAP_WRITTEN &&
              static_cast<int>(mltap::WriteResult::sampled_out) == MLTAP_SAMPLED_OUT &&
              static_cast<int>(mltap::WriteResult::dropped) == MLTAP_DROPPED);
static int to_code(mltap::WriteResult r) { return static_cast<int>(r); }

int mltap_write(mltap_stream* stream, const void* data, mltap_dtype dtype,
                const uint32_t* row_shape, uint32_t ndim, uint64_t rows,
                const uint64_t* trace_ids) {
  if (!stream) return MLTAP_ERR_INVALID;
  const auto dt = static_cast<mltap::DType>(dtype);
  if (!row_shape || ndim == 0 || ndim > mltap::format::kMaxRowDims) {
    // Counted by the SDK as bad input, like any other malformed write.
    return to_code(mltap::detail::write_general(*stream->core, data, dt, {}, rows, {}));
  }
  if (rows == 1 && ndim == 1) {
    return to_code(mltap::detail::write_row(*stream->core, data, dt, row_shape[0], trace_ids));
  }
  std::span<const uint64_t> ids;
  if (trace_ids) ids = std::span<const uint64_t>(trace_ids, rows);
  return to_code(mltap::detail::write_general(*stream->core, data, dt,
                                              std::span<const uint32_t>(row_shape, ndim), rows, ids));
}

int mltap_write_f32(mltap_stream* stream, const float* values, uint32_t count, int has_trace_id,
                    uint64_t trace_id) {
  if (!stream) return MLTAP_ERR_INVALID;
  return to_code(mltap::detail::write_row(*stream->core, values, mltap::DType::float32, count,
                                          has_trace_id ? &trace_id : nullptr));
}

uint32_t mltap_flag(const mltap_stream* stream, const char* name) {
  if (!stream || !name) return 0;
  return stream->stream.flag_value(name);
}

int mltap_get_stats(const mltap_stream* stream, mltap_stats* out) {
  if (!stream || !out || out->struct_size < sizeof(uint32_t)) return MLTAP_ERR_INVALID;
  const auto s = stream->stream.stats();
  mltap_stats full{};
  full.struct_size = sizeof full;
  full.rows_written = s.rows_written;
  full.rows_committed = s.rows_committed;
  full.rows_sampled_out = s.rows_sampled_out;
  full.rows_too_large = s.rows_too_large;
  full.rows_bad_input = s.rows_bad_input;
  full.rows_no_lane = s.rows_no_lane;
  full.rows_no_ring = s.rows_no_ring;
  const size_t n = out->struct_size < sizeof full ? out->struct_size : sizeof full;
  const uint32_t caller_size = out->struct_size;
  std::memcpy(out, &full, n);
  out->struct_size = caller_size;
  return 0;
}

int mltap_has_ring(const mltap_stream* stream) { return stream && stream->stream.has_ring() ? 1 : 0; }

}  // extern "C"
