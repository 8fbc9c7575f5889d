// mltap::Stream: checking the options (programming errors throw, naming what is wrong), the
// stream's life cycle, and the API's statistics and flags. The write paths are write_path.hpp
// (the fast path) and write.cpp.
#include "mltap/stream.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <stdexcept>

#include "mltap/naming.hpp"
#include "stream_options.hpp"
#include "write_path.hpp"

namespace mltap {
namespace detail {
namespace {

using namespace mltap::format;

std::string program_name() {
  std::ifstream in("/proc/self/comm");
  std::string s;
  std::getline(in, s);
  std::string out;
  for (char c : s) {
    if (naming::valid_component(std::string(1, c))) out += c;
    else out += '_';
  }
  return out.empty() ? std::string("unknown") : out.substr(0, 63);
}

}  // namespace

std::string namespace_from_options(const std::string& ns) {
  if (!ns.empty()) {
    if (!naming::valid_namespace(ns)) {
      throw std::invalid_argument("mltap: invalid namespace '" + ns + "': [a-z0-9_-]{1,31}");
    }
    return ns;
  }
  const char* env = std::getenv("MLTAP_NAMESPACE");
  if (env == nullptr || *env == '\0') return std::string(naming::kDefaultNamespace);
  if (!naming::valid_namespace(env)) {
    // Falling back to "default" would write into another tenant's namespace.
    throw EnvironmentError("mltap: MLTAP_NAMESPACE='" + std::string(env) +
                           "' is not a valid namespace: [a-z0-9_-]{1,31}");
  }
  return env;
}

// Everything the constructor refuses, in the order a user would fix it.
void check_options(std::string_view name, StreamOptions& options) {
  if (!naming::valid_stream_name(name)) {
    throw std::invalid_argument("mltap: invalid stream name '" + std::string(name) +
                                "': 1..127 printable ASCII characters without spaces or quotes");
  }
  if (options.component.empty()) options.component = program_name();
  if (!naming::valid_component(options.component)) {
    throw std::invalid_argument("mltap: invalid component '" + options.component + "'");
  }
  options.ns = namespace_from_options(options.ns);
  if (options.shm_dir.empty()) options.shm_dir = naming::shm_dir_from_env();
  if (!is_pow2(options.ring_bytes) || options.ring_bytes < (64u << 10) ||
      options.ring_bytes > (1ull << 30)) {
    throw std::invalid_argument("mltap: ring_bytes must be a power of two in [64 KiB, 1 GiB]");
  }
  if (options.lanes == 0 || options.lanes > kMaxLanes) {
    throw std::invalid_argument("mltap: lanes must be 1..256");
  }
  if (static_cast<std::uint16_t>(options.kind) == 0 ||
      static_cast<std::uint16_t>(options.kind) > kStreamKindMax) {
    throw std::invalid_argument("mltap: invalid stream kind");
  }
  if (options.dtype != DType::invalid && !dtype_valid(static_cast<std::uint16_t>(options.dtype))) {
    throw std::invalid_argument("mltap: invalid dtype");
  }
  if (options.features.size() > kMaxFeatures) {
    throw std::invalid_argument("mltap: at most 65536 features");
  }
  std::map<std::string_view, std::size_t> seen;
  for (std::size_t i = 0; i < options.features.size(); ++i) {
    const std::string& f = options.features[i];
    if (!naming::valid_label_text(f, 127)) {
      throw std::invalid_argument("mltap: invalid feature name '" + f +
                                  "': 1..127 printable ASCII characters without quotes or backslash");
    }
    // Two columns of one name would be two time series of one name for the agent.
    const auto [it, fresh] = seen.emplace(f, i);
    if (!fresh) {
      throw std::invalid_argument("mltap: duplicate feature name '" + f + "' (features " +
                                  std::to_string(it->second) + " and " + std::to_string(i) + ")");
    }
  }
  if (options.artifacts.size() > kMaxArtifacts) {
    throw std::invalid_argument("mltap: at most 16 artifacts");
  }
  for (const auto& a : options.artifacts) {
    if (!naming::valid_artifact_path(a)) {
      throw std::invalid_argument("mltap: invalid artifact path '" + a +
                                  "': absolute, printable ASCII, no . or .. components, < 1024 bytes");
    }
  }
  if (static_cast<std::uint32_t>(options.task) > kTaskMax) {
    throw std::invalid_argument("mltap: invalid task");
  }
  if ((options.task != Task::none || !options.labels_stream.empty()) &&
      options.kind != StreamKind::predictions) {
    throw std::invalid_argument("mltap: task and labels_stream apply to kind predictions only");
  }
  if (!options.labels_stream.empty() && !naming::valid_stream_name(options.labels_stream)) {
    throw std::invalid_argument("mltap: invalid labels_stream '" + options.labels_stream + "'");
  }
  if (options.row_shape.size() > kMaxRowDims) {
    throw std::invalid_argument("mltap: row_shape has more than 6 dimensions");
  }
  if (!options.features.empty()) {
    std::uint64_t elems = 1;
    for (auto d : options.row_shape) elems *= d;
    if (!options.row_shape.empty() && elems != options.features.size()) {
      throw std::invalid_argument("mltap: " + std::to_string(options.features.size()) +
                                  " feature names for a row shape of " + std::to_string(elems) +
                                  " values");
    }
  }
}

}  // namespace detail

using detail::StreamCore;
using namespace format;

Stream::Stream(std::string_view name, StreamOptions options) : core_(new StreamCore()) {
  detail::check_options(name, options);
  StreamCore& c = *core_;
  c.name = std::string(name);
  c.feature_names = options.features;
  c.declared_shape = options.row_shape;
  if (c.declared_shape.empty() && !options.features.empty()) {
    c.declared_shape = {static_cast<std::uint32_t>(options.features.size())};
  }
  c.precise_clock = options.clock == ClockKind::realtime;
  c.allowed_per_window =  // at least one row, so that tiny budgets still estimate mid-window
      options.sampling_budget == 0
          ? 0
          : std::max<std::uint64_t>(1, static_cast<std::uint64_t>(options.sampling_budget * detail::kWindowSeconds));
  c.options = std::move(options);
  detail::register_stream(c);
  // Without an agent nobody removes what SIGKILLed producers of this user left behind.
  if (!detail::agent_present(c.options.shm_dir, c.options.ns)) {
    detail::remove_dead_segments(c.options.shm_dir, c.options.ns);
  }
  c.create_segment();
}

Stream::~Stream() {
  if (!core_) return;
  detail::unregister_stream(*core_);
  core_->close();
}

Stream::Stream(Stream&&) noexcept = default;
Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    Stream dying(std::move(*this));
    core_ = std::move(other.core_);
  }
  return *this;
}

WriteResult Stream::write_row(const void* data, DType dtype, std::uint32_t n,
                              const std::uint64_t* trace_id) noexcept {
  if (!core_) return WriteResult::dropped;
  return detail::write_row(*core_, data, dtype, n, trace_id);
}

WriteResult Stream::write_tensor(const void* data, DType dtype,
                                 std::span<const std::uint32_t> row_shape, std::size_t rows,
                                 std::span<const std::uint64_t> trace_ids) noexcept {
  if (!core_) return WriteResult::dropped;
  if (rows == 1 && row_shape.size() == 1 && trace_ids.size() <= 1) {
    return detail::write_row(*core_, data, dtype, row_shape[0],
                             trace_ids.empty() ? nullptr : trace_ids.data());
  }
  return detail::write_general(*core_, data, dtype, row_shape, rows, trace_ids);
}

std::uint32_t Stream::flag_value(std::string_view name) const noexcept {
  return core_ ? core_->read_flag(name) : 0;
}

bool Stream::on_flag(std::string_view name, std::function<void(std::uint32_t)> callback) {
  if (!core_ || !naming::valid_label_text(name, kFlagNameMax - 1) || !callback) return false;
  StreamCore& c = *core_;
  std::lock_guard<std::mutex> lock(c.flag_mutex);
  auto& slot = c.flag_callbacks[std::string(name)];
  if (slot.second.empty()) slot.first = c.read_flag(name);
  slot.second.push_back(std::move(callback));
  if (!c.flag_thread.joinable()) c.start_flag_thread();
  return true;
}

StreamStats Stream::stats() const noexcept {
  StreamStats s;
  if (!core_) return s;
  const StreamCore& c = *core_;
  s.rows_written = c.rows_written_unlaned.load(std::memory_order_relaxed);
  s.rows_no_ring = c.rows_no_ring.load(std::memory_order_relaxed);
  s.rows_no_lane = c.rows_no_lane.load(std::memory_order_relaxed);
  for (const auto& w : c.writers) {
    LaneHeader& h = *w.header;
    s.rows_written += detail::aref(h.rows_written).load(std::memory_order_relaxed);
    s.rows_committed += detail::aref(h.rows_committed).load(std::memory_order_relaxed);
    s.rows_sampled_out += detail::aref(h.rows_sampled_out).load(std::memory_order_relaxed);
    s.rows_too_large += detail::aref(h.rows_too_large).load(std::memory_order_relaxed);
    s.rows_bad_input += detail::aref(h.rows_bad_input).load(std::memory_order_relaxed);
  }
  return s;
}

bool Stream::has_ring() const noexcept {
  return core_ && core_->base != nullptr && !core_->ring_lost.load(std::memory_order_relaxed);
}
const std::string& Stream::name() const noexcept {
  static const std::string empty;
  return core_ ? core_->name : empty;
}
std::string Stream::segment_path() const { return has_ring() ? core_->path : ""; }

void set_sdk_name(std::string_view sdk) { detail::set_sdk(sdk); }

}  // namespace mltap
