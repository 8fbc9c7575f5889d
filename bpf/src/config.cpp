#include "bpf/config.hpp"

#include <algorithm>

namespace mltap::bpf {

std::vector<std::string> default_model_patterns() {
  return {"*.pt",   "*.pth",  "*.onnx", "*.pkl",  "*.pickle", "*.joblib", "*.safetensors",
          "*.bin",  "*.h5",   "*.hdf5", "*.ckpt", "*.gguf",   "*.pb",     "*.tflite",
          "*.keras", "*.model"};
}

namespace {

void check_patterns(core::ConfigSection& s, const std::vector<std::string>& patterns) {
  if (patterns.empty()) s.fail("patterns", "must list at least one pattern");
  if (patterns.size() > 256) s.fail("patterns", "at most 256 patterns");
  for (const auto& p : patterns) {
    if (p.empty()) s.fail("patterns", "a pattern is empty");
    if (p.size() > 255) s.fail("patterns", "pattern '" + p.substr(0, 32) + "...' is too long");
    if (p.find('/') != std::string::npos) {
      s.fail("patterns", "pattern '" + p + "' contains '/': patterns match file names; "
                         "list directories in watch_dirs");
    }
    if (p.find('\0') != std::string::npos) s.fail("patterns", "a pattern contains a NUL byte");
  }
}

void check_dirs(core::ConfigSection& s, const std::vector<std::string>& dirs) {
  if (dirs.size() > 1024) s.fail("watch_dirs", "at most 1024 directories");
  for (const auto& d : dirs) {
    if (d.empty() || d[0] != '/') s.fail("watch_dirs", "'" + d + "' is not an absolute path");
    if (d.size() > 4095) s.fail("watch_dirs", "a path is too long");
    if (d.find('\0') != std::string::npos) s.fail("watch_dirs", "a path contains a NUL byte");
  }
}

}  // namespace

TracerConfig parse_tracer_config(core::ConfigSection& s) {
  using std::chrono::milliseconds;
  using std::chrono::nanoseconds;
  using std::chrono::seconds;
  TracerConfig c;
  if (auto v = s.get_bool("enabled")) c.enabled = *v;
  if (auto v = s.get_enum("attach_mode", {"auto", "tp_btf", "raw_tp", "tracefs"})) {
    if (*v == "tp_btf") c.attach_mode = AttachMode::tp_btf;
    else if (*v == "raw_tp") c.attach_mode = AttachMode::raw_tp;
    else if (*v == "tracefs") c.attach_mode = AttachMode::tracefs;
    else c.attach_mode = AttachMode::automatic;
  }
  {
    auto probes = s.child("probes");
    for (std::size_t i = 0; i < kProbeCount; ++i) {
      const std::string name(probe_name(static_cast<Probe>(i)));
      if (auto v = probes.get_bool(name)) c.probes[i] = *v;
    }
    probes.finish();
  }
  {
    auto files = s.child("files");
    if (auto v = files.get_string_list("patterns")) {
      check_patterns(files, *v);
      c.files.patterns = *v;
    }
    if (auto v = files.get_string_list("watch_dirs")) {
      check_dirs(files, *v);
      c.files.watch_dirs = *v;
    }
    if (auto v = files.get_bool("report_untracked_actors")) c.files.report_untracked_actors = *v;
    files.finish();
  }
  if (auto v = s.get_bytes("ring_buffer_size", 4096, 1ULL << 30)) {
    if ((*v & (*v - 1)) != 0) s.fail("ring_buffer_size", "must be a power of two");
    c.ring_buffer_bytes = *v;
  }
  if (auto v = s.get_int("max_tracked_processes", 16, 1 << 20)) {
    c.max_tracked_processes = static_cast<std::uint32_t>(*v);
  }
  if (auto v = s.get_bool("report_threads")) c.report_threads = *v;
  if (auto v = s.get_duration("tcp_retransmit_min_interval", nanoseconds(0), std::chrono::hours(1))) {
    c.tcp_retransmit_min_interval = *v;
  }
  if (auto v = s.get_duration("summary_interval", milliseconds(100), std::chrono::hours(24))) {
    c.summary_interval = *v;
  }
  if (auto v = s.get_duration("runqueue_report_threshold", nanoseconds(0), seconds(3600))) {
    c.runqueue_report_threshold = *v;
  }
  if (auto v = s.get_duration("block_io_report_threshold", nanoseconds(0), seconds(3600))) {
    c.block_io_report_threshold = *v;
  }
  if (auto v = s.get_int("latency_min_samples", 1, 1'000'000'000)) {
    c.latency_min_samples = static_cast<std::uint64_t>(*v);
  }
  if (auto v = s.get_bool("mount_tracefs")) c.mount_tracefs = *v;
  if (auto v = s.get_string("btf_path")) {
    if (!v->empty() && (*v)[0] != '/') s.fail("btf_path", "must be an absolute path");
    c.btf_path = *v;
  }
  s.finish();
  return c;
}

}  // namespace mltap::bpf
