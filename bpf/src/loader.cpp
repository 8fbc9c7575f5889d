// Loading and attaching the probes (see loader.hpp).
#include "bpf/src/loader.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include "core/log.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace mltap::bpf {

using core::ProbeStatus;

using namespace plan;  // NOLINT: the probe table and kernel probing

ProbeLoader::ProbeLoader(const TracerConfig& cfg, const TracerOptions& opts,
                         std::array<ProbeStatus, kProbeCount>& status)
    : cfg(cfg), opts(opts), status(status) {}

ProbeLoader::~ProbeLoader() {
  for (auto* l : links) bpf_link__destroy(l);
}

void ProbeLoader::load() { load_bpf(); }

ProbeStatus& ProbeLoader::st(Probe p) { return status[static_cast<std::size_t>(p)]; }

bool ProbeLoader::group_enabled(const Group& g) const {
  return std::any_of(g.probes.begin(), g.probes.end(),
                     [&](Probe p) { return cfg.probe_enabled(p); });
}

bool ProbeLoader::prog_needed(const ProgRef& p) const {
  return p.only_for < 0 || cfg.probe_enabled(static_cast<Probe>(p.only_for));
}

std::string ProbeLoader::unavailable(const Variant& v, KernelFeatures& f) {
  for (const auto& p : v.progs) {
    const auto& off = opts.unavailable_programs;
    if (std::find(off.begin(), off.end(), p.name) != off.end()) {
      return std::string("program ") + p.name + " marked unavailable (TracerOptions)";
    }
  }
  if (v.needs_sched_info && ::access("/proc/self/schedstat", R_OK) != 0) {
    return "no /proc/self/schedstat (kernel without CONFIG_SCHED_INFO)";
  }
  for (const auto& p : v.progs) {
    if (!prog_needed(p)) continue;
    if (v.method == Method::tracefs) {
      ensure_tracefs(f, cfg, opts.tracefs_root);
      if (!f.tracefs_ok) return f.tracefs_note;
      struct stat sb {};
      const std::string id = opts.tracefs_root + "/events/" + p.tracepoint + "/id";
      if (::stat(id.c_str(), &sb) != 0) return std::string("no tracefs event ") + p.tracepoint;
    } else if (!f.btf_tracepoints.count(std::string(event_name_of(p.tracepoint)))) {
      return std::string("no raw tracepoint ") + std::string(event_name_of(p.tracepoint)) +
             " in kernel BTF";
    }
  }
  return {};
}

void ProbeLoader::set_rodata(mltap_bpf* s) {
  const long tck = sysconf(_SC_CLK_TCK);
  s->rodata->ns_per_tick = tck > 0 ? 1'000'000'000ULL / static_cast<std::uint64_t>(tck) : 10'000'000ULL;
  s->rodata->report_threads = cfg.report_threads;
  s->rodata->retransmit_min_interval_ns =
      static_cast<std::uint64_t>(cfg.tcp_retransmit_min_interval.count());
  const SuffixPlan plan = suffix_plan(cfg.files.patterns);
  s->rodata->wakeup_bytes = cfg.ring_buffer_bytes / 4;
  s->rodata->file_match_all = plan.match_all;
  s->rodata->record_proc_names = cfg.probe_enabled(Probe::file_watch);
  const std::size_t n = plan.match_all ? 0 : plan.suffixes.size();
  s->rodata->n_suffixes = static_cast<__u32>(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& sfx = plan.suffixes[i];
    s->rodata->suffix_lens[i] = static_cast<__u32>(sfx.size());
    for (std::size_t j = 0; j < sfx.size(); ++j) {
      const_cast<char&>(s->rodata->suffixes[i][j]) = sfx[j];
    }
  }
}

std::size_t ProbeLoader::pid_max_words() {
  std::uint64_t pid_max = 4194304;
  if (FILE* f = std::fopen("/proc/sys/kernel/pid_max", "r")) {
    unsigned long long v = 0;
    if (std::fscanf(f, "%llu", &v) == 1 && v > 0 && v <= (1ULL << 22)) pid_max = v;
    std::fclose(f);
  }
  return static_cast<std::size_t>((pid_max + 63) / 64);
}

// Opens a skeleton with only `progs` autoloaded, sized and tuned, and loads it.
SkelPtr ProbeLoader::open_and_load(const std::set<std::string>& progs, std::string& error) {
  LIBBPF_OPTS(bpf_object_open_opts, oo);
  if (!cfg.btf_path.empty()) oo.btf_custom_path = cfg.btf_path.c_str();
  LibbpfLog::get().clear();
  SkelPtr s(mltap_bpf__open_opts(&oo));
  if (!s) {
    error = "open: " + err_text(-errno) + " " + LibbpfLog::get().reason();
    return nullptr;
  }
  bpf_program* prog = nullptr;
  bpf_object__for_each_program(prog, s->obj) {
    bpf_program__set_autoload(prog, progs.count(bpf_program__name(prog)) > 0);
  }
  // Task storage (5.11+) is only used by the tp_btf run-queue programs: do not ask a kernel
  // without it to create the map when they are not loaded.
  bpf_map__set_autocreate(s->maps.runq_task, progs.count("switch_btf") > 0);
  bpf_map__set_autocreate(s->maps.runq_si, progs.count("switch_si_btf") > 0);
  set_rodata(s.get());
  bpf_map__set_max_entries(s->maps.events, static_cast<__u32>(cfg.ring_buffer_bytes));
  bpf_map__set_max_entries(s->maps.tracked, cfg.max_tracked_processes);
  bpf_map__set_max_entries(s->maps.runq_hist, cfg.max_tracked_processes);
  bpf_map__set_max_entries(s->maps.bio_hist, cfg.max_tracked_processes);
  bpf_map__set_max_entries(s->maps.tracked_bits, static_cast<__u32>(pid_max_words()));
  const int err = mltap_bpf__load(s.get());
  if (err) {
    error = "load: " + err_text(err) + "; " + LibbpfLog::get().reason();
    return nullptr;
  }
  return s;
}

bpf_program* ProbeLoader::find_prog(mltap_bpf* s, const std::string& name) {
  return bpf_object__find_program_by_name(s->obj, name.c_str());
}

// Attaches the programs of one probe group. On failure detaches what it attached.
bool ProbeLoader::attach_group(mltap_bpf* s, const Variant& v, std::vector<bpf_link*>& out,
                  std::string& error) {
  std::vector<bpf_link*> mine;
  for (const auto& p : v.progs) {
    if (!prog_needed(p)) continue;
    bpf_program* prog = find_prog(s, p.name);
    LibbpfLog::get().clear();
    bpf_link* l = prog ? bpf_program__attach(prog) : nullptr;
    if (!l) {
      const int e = errno;
      error = std::string("attach ") + p.name + " (" + std::string(method_name(v.method)) +
              " " + p.tracepoint + "): " + err_text(-e) + " " + LibbpfLog::get().reason();
      for (auto* m : mine) bpf_link__destroy(m);
      return false;
    }
    mine.push_back(l);
  }
  out.insert(out.end(), mine.begin(), mine.end());
  return true;
}

std::set<std::string> ProbeLoader::progs_of(const Variant& v) const {
  std::set<std::string> s;
  for (const auto& p : v.progs) {
    if (prog_needed(p)) s.insert(p.name);
  }
  return s;
}

// Load one group alone (throwaway skeleton) to find out whether this variant works here.
bool ProbeLoader::trial(const Variant& v, std::string& error) {
  SkelPtr s = open_and_load(progs_of(v), error);
  if (!s) return false;
  std::vector<bpf_link*> ls;
  const bool ok = attach_group(s.get(), v, ls, error);
  for (auto* l : ls) bpf_link__destroy(l);
  return ok;
}

void ProbeLoader::mark_group(const Group& g, bool up, const std::string& method, const std::string& reason) {
  for (Probe p : g.probes) {
    if (!cfg.probe_enabled(p)) continue;
    auto& s = st(p);
    s.up = up;
    s.method = up ? method : "";
    s.reason = reason;
  }
}

void ProbeLoader::load_bpf() {
  const bool any = std::any_of(groups().begin(), groups().end(),
                               [&](const Group& g) { return group_enabled(g); });
  if (!any) return;
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(libbpf_print); });

  KernelFeatures f = probe_kernel(cfg);
  if (!f.bpf_blocker.empty()) {
    for (const auto& g : groups()) {
      if (group_enabled(g)) mark_group(g, false, "", f.bpf_blocker);
    }
    return;
  }
  // Candidate variants per group, in order of preference.
  std::vector<std::vector<const Variant*>> cand(groups().size());
  std::vector<std::string> why_not(groups().size());
  for (std::size_t gi = 0; gi < groups().size(); ++gi) {
    const Group& g = groups()[gi];
    if (!group_enabled(g)) continue;
    for (const auto& v : g.variants) {
      if (!method_allowed(cfg.attach_mode, v.method)) continue;
      // tracefs variants are checked (and tracefs mounted) only when actually tried.
      if (v.method == Method::tracefs && !cand[gi].empty()) {
        cand[gi].push_back(&v);
        continue;
      }
      if (auto u = unavailable(v, f); !u.empty()) {
        why_not[gi] += (why_not[gi].empty() ? "" : "; ") + std::string(method_name(v.method)) +
                       ": " + u;
        continue;
      }
      cand[gi].push_back(&v);
    }
    if (cand[gi].empty()) {
      mark_group(g, false, "",
                 why_not[gi].empty()
                     ? "no variant for attach_mode " + std::string(attach_mode_name(cfg.attach_mode))
                     : why_not[gi]);
    }
  }
  // Fast path: the preferred variant of every group, in one load.
  std::vector<const Variant*> chosen(groups().size(), nullptr);
  for (std::size_t gi = 0; gi < groups().size(); ++gi) {
    if (!cand[gi].empty()) chosen[gi] = cand[gi].front();
  }
  if (!load_chosen(chosen)) {
    // Something refused: find, group by group, the first variant that loads and attaches.
    core::log::debug("ebpf: combined load failed, probing each probe alone");
    for (std::size_t gi = 0; gi < groups().size(); ++gi) {
      chosen[gi] = nullptr;
      std::string reasons;
      for (const Variant* v : cand[gi]) {
        std::string e = unavailable(*v, f);
        if (e.empty() && trial(*v, e)) {
          chosen[gi] = v;
          break;
        }
        reasons += (reasons.empty() ? "" : "; ") + std::string(method_name(v->method)) + ": " + e;
      }
      if (!cand[gi].empty() && !chosen[gi]) mark_group(groups()[gi], false, "", reasons);
    }
    if (!load_chosen(chosen)) {
      for (std::size_t gi = 0; gi < groups().size(); ++gi) {
        if (chosen[gi]) mark_group(groups()[gi], false, "", "load failed after probing");
      }
    }
  }
}

// Loads the union of the chosen variants and attaches them. False if the load or any
// attach failed (then nothing stays loaded).
bool ProbeLoader::load_chosen(const std::vector<const Variant*>& chosen) {
  std::set<std::string> progs;
  for (const Variant* v : chosen) {
    if (v) progs.merge(progs_of(*v));
  }
  if (progs.empty()) return true;
  std::string error;
  SkelPtr s = open_and_load(progs, error);
  if (!s) {
    core::log::debug("ebpf: {}", error);
    return false;
  }
  std::vector<bpf_link*> ls;
  for (std::size_t gi = 0; gi < chosen.size(); ++gi) {
    if (!chosen[gi]) continue;
    if (!attach_group(s.get(), *chosen[gi], ls, error)) {
      core::log::debug("ebpf: {}", error);
      for (auto* l : ls) bpf_link__destroy(l);
      return false;
    }
  }
  // Everything is in place: keep it.
  links = std::move(ls);
  for (std::size_t gi = 0; gi < chosen.size(); ++gi) {
    if (!chosen[gi]) continue;
    const Group& g = groups()[gi];
    mark_group(g, true, std::string(method_name(chosen[gi]->method)), "");
    for (const auto& p : chosen[gi]->progs) {
      if (!prog_needed(p)) continue;
      if (bpf_program* bp = find_prog(s.get(), p.name)) {
        attached.push_back({p.name, g.name, bpf_program__fd(bp)});
      }
    }
  }
  skel = std::move(s);
  return true;
}

}  // namespace mltap::bpf
