// Which BPF programs make up which probe (tp_btf, raw_tp and tracefs variants, in order of
// preference), what the running kernel offers, and libbpf's messages kept for failure reasons.
// Internal to the loader.
#pragma once

#include <bpf/libbpf.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "bpf/config.hpp"

namespace mltap::bpf::plan {

// libbpf's warnings, so that a failed load or attach can say why.
class LibbpfLog {
 public:
  static LibbpfLog& get();
  void clear() {
    std::lock_guard lk(mu_);
    lines_.clear();
  }
  void add(std::string line) {
    while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
    if (line.empty()) return;
    std::lock_guard lk(mu_);
    if (lines_.size() >= 64) lines_.erase(lines_.begin());
    lines_.push_back(std::move(line));
  }
  // The most telling line: the first that says what failed, else the last one.
  std::string reason() {
    std::lock_guard lk(mu_);
    for (const auto& l : lines_) {
      if (l.find("failed") != std::string::npos || l.find("error") != std::string::npos) {
        return l.substr(0, 300);
      }
    }
    return lines_.empty() ? std::string() : lines_.back().substr(0, 300);
  }

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

int libbpf_print(enum libbpf_print_level level, const char* fmt, va_list ap);
std::string err_text(int err);

enum class Method : std::uint8_t { tp_btf, raw_tp, tracefs };

constexpr std::string_view method_name(Method m) noexcept {
  switch (m) {
    case Method::tp_btf: return "tp_btf";
    case Method::raw_tp: return "raw_tp";
    case Method::tracefs: return "tracefs";
  }
  return "?";
}

struct ProgRef {
  const char* name;
  const char* tracepoint;  // "category/event"
  int only_for = -1;       // needed only when this Probe is enabled
};

struct Variant {
  Method method;
  std::vector<ProgRef> progs;
  bool needs_sched_info = false;  // reads task->sched_info, kept only with CONFIG_SCHED_INFO
};

struct Group {
  const char* name;
  std::vector<Probe> probes;
  std::vector<Variant> variants;  // in order of preference
};

const std::vector<Group>& groups();
std::string_view event_name_of(const char* tracepoint);
std::string_view prog_label(std::uint32_t prog);  // label of a `lost` counter index
std::string_view map_label(std::uint32_t id);     // label of a `map_full` counter index

struct KernelFeatures {
  std::string bpf_blocker;  // non-empty: no BPF probe can load, and why
  std::set<std::string> btf_tracepoints;
  bool tracefs_checked = false;
  bool tracefs_ok = false;
  std::string tracefs_note;
  bool has_sys_admin = false;
};

std::optional<std::uint64_t> cap_eff();
bool has_cap(std::uint64_t mask, int cap);
std::string cap_blocker();
KernelFeatures probe_kernel(const TracerConfig& cfg);
bool tracefs_mounted(const std::string& root);
// Mounts tracefs when a tracefs probe needs it; records why not, once.
void ensure_tracefs(KernelFeatures& f, const TracerConfig& cfg, const std::string& root);
bool method_allowed(AttachMode mode, Method m);

// File name patterns the kernel can pre-filter: "*<suffix>" without other wildcards.
struct SuffixPlan {
  bool match_all = false;
  std::vector<std::string> suffixes;
};
SuffixPlan suffix_plan(const std::vector<std::string>& patterns);

}  // namespace mltap::bpf::plan
