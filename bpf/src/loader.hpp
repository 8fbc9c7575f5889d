// Loads and attaches the probes the configuration asks for, each with the best variant the
// kernel accepts (docs/ebpf.md, "Start-up"), and records why the others are down. Internal.
#pragma once

#include <array>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "bpf/src/probe_plan.hpp"
#include "bpf/tracer.hpp"
#include "mltap.skel.h"

namespace mltap::bpf {

struct BpfDeleter {
  void operator()(mltap_bpf* s) const noexcept { mltap_bpf__destroy(s); }
};
using SkelPtr = std::unique_ptr<mltap_bpf, BpfDeleter>;

struct AttachedProg {
  std::string name;   // BPF program name
  std::string probe;  // probe group it belongs to
  int fd = -1;        // owned by the skeleton
};

class ProbeLoader {
 public:
  // `status` is updated for every BPF probe the configuration enables.
  ProbeLoader(const TracerConfig& cfg, const TracerOptions& opts,
              std::array<core::ProbeStatus, kProbeCount>& status);
  ~ProbeLoader();
  ProbeLoader(const ProbeLoader&) = delete;
  ProbeLoader& operator=(const ProbeLoader&) = delete;

  void load();

  // What load() produced; the caller takes them over.
  SkelPtr skel;
  std::vector<bpf_link*> links;
  std::vector<AttachedProg> attached;

 private:
  core::ProbeStatus& st(Probe p);
  bool group_enabled(const plan::Group& g) const;
  bool prog_needed(const plan::ProgRef& p) const;
  std::string unavailable(const plan::Variant& v, plan::KernelFeatures& f);
  void set_rodata(mltap_bpf* s);
  static std::size_t pid_max_words();
  SkelPtr open_and_load(const std::set<std::string>& progs, std::string& error);
  bpf_program* find_prog(mltap_bpf* s, const std::string& name);
  bool attach_group(mltap_bpf* s, const plan::Variant& v, std::vector<bpf_link*>& out,
                    std::string& error);
  std::set<std::string> progs_of(const plan::Variant& v) const;
  bool trial(const plan::Variant& v, std::string& error);
  void mark_group(const plan::Group& g, bool up, const std::string& method,
                  const std::string& reason);
  void load_bpf();
  bool load_chosen(const std::vector<const plan::Variant*>& chosen);

  const TracerConfig& cfg;
  const TracerOptions& opts;
  std::array<core::ProbeStatus, kProbeCount>& status;
};

}  // namespace mltap::bpf
