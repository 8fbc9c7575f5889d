#include "bpf/capabilities.hpp"

#include <dirent.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <signal.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <set>
#include <thread>

#include "bpf/src/proc.hpp"

namespace mltap::bpf {
namespace {

// What every thread applies, computed once by the caller (the handler only makes syscalls).
struct Plan {
  __user_cap_data_struct data[2]{};
  std::uint64_t keep_mask = 0;
  int last_cap = 40;
  bool drop_bounding = false;
  bool set_securebits = false;
  unsigned long securebits = 0;
};

Plan g_plan;
std::atomic<int> g_acks{0};
std::atomic<int> g_failures{0};

// Async-signal-safe: raw system calls only. Order matters: securebits and the bounding set need
// CAP_SETPCAP, which capset() takes away last.
int apply_plan() noexcept {
  int err = 0;
  if (g_plan.set_securebits &&
      syscall(SYS_prctl, PR_SET_SECUREBITS, g_plan.securebits, 0UL, 0UL, 0UL) != 0) {
    err = errno;
  }
  if (g_plan.drop_bounding) {
    for (int c = 0; c <= g_plan.last_cap; ++c) {
      if (!((g_plan.keep_mask >> c) & 1)) syscall(SYS_prctl, PR_CAPBSET_DROP, c, 0UL, 0UL, 0UL);
    }
  }
  syscall(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0UL, 0UL, 0UL);
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  if (syscall(SYS_capset, &hdr, g_plan.data) != 0) err = errno;
  return err;
}

void on_signal(int) {
  const int saved = errno;
  if (apply_plan() != 0) g_failures.fetch_add(1);
  g_acks.fetch_add(1);
  errno = saved;
}

std::vector<pid_t> threads_of_self() {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc/self/task");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    const long v = std::strtol(e->d_name, &end, 10);
    if (end && *end == '\0' && v > 0) out.push_back(static_cast<pid_t>(v));
  }
  closedir(d);
  return out;
}

int last_cap() {
  std::ifstream f("/proc/sys/kernel/cap_last_cap");
  int v = CAP_LAST_CAP;
  if (!(f >> v) || v < 0 || v > 63) v = CAP_LAST_CAP;
  return v;
}

std::string cap_label(int cap) {
  char* n = cap_to_name(static_cast<cap_value_t>(cap));
  std::string s = n ? n : ("cap_" + std::to_string(cap));
  if (n) cap_free(n);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
  return s;
}

struct ThreadCaps {
  std::uint64_t prm = 0, eff = 0, inh = 0, amb = 0;
};

std::optional<ThreadCaps> caps_of(pid_t tid) {
  const std::string p = "/proc/self/task/" + std::to_string(tid) + "/status";
  ThreadCaps c;
  auto prm = proc::read_cap_mask(p, "CapPrm");
  auto eff = proc::read_cap_mask(p, "CapEff");
  auto inh = proc::read_cap_mask(p, "CapInh");
  auto amb = proc::read_cap_mask(p, "CapAmb");
  if (!prm || !eff || !inh) return std::nullopt;
  c.prm = *prm;
  c.eff = *eff;
  c.inh = *inh;
  c.amb = amb.value_or(0);
  return c;
}

}  // namespace

std::vector<std::string> effective_capabilities() {
  std::vector<std::string> out;
  const auto eff = proc::read_cap_mask("/proc/thread-self/status", "CapEff");
  if (!eff) return out;
  for (int c = 0; c < 64; ++c) {
    if ((*eff >> c) & 1) out.push_back(cap_label(c));
  }
  return out;
}

CapabilityDropResult drop_capabilities(const CapabilityDropOptions& options) {
  CapabilityDropResult r;
  std::uint64_t keep = 0;
  for (const auto& name : options.keep) {
    std::string lower = name;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    cap_value_t v = 0;
    if (cap_from_name(lower.c_str(), &v) != 0 || v < 0 || v > 63) {
      r.error = "unknown capability '" + name + "'";
      return r;
    }
    keep |= std::uint64_t{1} << v;
  }
  const pid_t self = static_cast<pid_t>(syscall(SYS_gettid));
  const auto mine = caps_of(self);
  if (!mine) {
    r.error = "cannot read this thread's capabilities";
    return r;
  }
  const std::uint64_t target = keep & mine->prm;  // cannot keep what is not permitted
  constexpr int kSetpcap = CAP_SETPCAP;
  const bool setpcap = (mine->eff >> kSetpcap) & 1;

  g_plan = Plan{};
  g_plan.keep_mask = keep;
  g_plan.last_cap = last_cap();
  g_plan.drop_bounding = setpcap;
  g_plan.set_securebits = setpcap && options.lock_securebits;
  g_plan.securebits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                      SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
                      SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
  g_plan.data[0].effective = g_plan.data[0].permitted = static_cast<__u32>(target);
  g_plan.data[1].effective = g_plan.data[1].permitted = static_cast<__u32>(target >> 32);
  g_plan.data[0].inheritable = g_plan.data[1].inheritable = 0;

  const int sig = SIGRTMIN + options.signal_offset_from_rtmin;
  if (options.signal_offset_from_rtmin < 0 || sig > SIGRTMAX) {
    r.error = "signal_offset_from_rtmin is out of range";
    return r;
  }
  struct sigaction sa {}, old {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (sigaction(sig, &sa, &old) != 0) {
    r.error = std::string("sigaction: ") + std::strerror(errno);
    return r;
  }

  auto thread_ok = [&](const ThreadCaps& c) {
    return (c.prm & ~target) == 0 && (c.eff & ~target) == 0 && c.inh == 0 && c.amb == 0;
  };
  g_failures = 0;
  std::set<pid_t> verified, unreachable;
  bool self_done = false;
  for (int round = 0; round < 8; ++round) {
    // Signal every thread that still holds more than the target.
    std::vector<pid_t> todo;
    unreachable.clear();
    for (pid_t t : threads_of_self()) {
      if (t == self) continue;
      auto c = caps_of(t);
      if (!c || thread_ok(*c)) continue;
      const auto blocked = proc::read_cap_mask("/proc/self/task/" + std::to_string(t) + "/status", "SigBlk");
      if (blocked && ((*blocked >> (sig - 1)) & 1)) {
        unreachable.insert(t);  // blocks the signal now; tried again next round
        continue;
      }
      todo.push_back(t);
    }
    const int before = g_acks.load();
    int sent = 0;
    for (pid_t t : todo) {
      if (syscall(SYS_tgkill, getpid(), t, sig) == 0) ++sent;
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (g_acks.load() - before < sent && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (!self_done) {
      if (apply_plan() != 0) g_failures.fetch_add(1);
      self_done = true;
    }
    // Verify everyone (threads may have started meanwhile, inheriting their creator's sets).
    bool all = true;
    verified.clear();
    for (pid_t t : threads_of_self()) {
      auto c = caps_of(t);
      if (!c) continue;  // exited
      if (thread_ok(*c)) verified.insert(t);
      else all = false;
    }
    if (all) {
      unreachable.clear();
      break;
    }
    if (round + 1 < 8) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  sigaction(sig, &old, nullptr);
  r.threads = verified.size();
  r.unreachable_threads.assign(unreachable.begin(), unreachable.end());
  bool rest_ok = true;
  for (pid_t t : threads_of_self()) {
    auto c = caps_of(t);
    if (c && !thread_ok(*c) && !unreachable.count(t)) rest_ok = false;
  }
  r.ok = rest_ok && unreachable.empty();
  if (!rest_ok) {
    r.error = "some threads still hold capabilities";
  } else if (!unreachable.empty()) {
    r.error = std::to_string(unreachable.size()) + " thread(s) block signal " + std::to_string(sig) +
              " and keep their capabilities";
  } else if (g_failures.load() != 0) {
    r.error = "a thread could not set securebits";  // caps verified; securebits best effort
  }
  for (int c = 0; c < 64; ++c) {
    if ((target >> c) & 1) r.kept.push_back(cap_label(c));
  }
  r.securebits_locked = g_plan.set_securebits && prctl(PR_GET_SECUREBITS) ==
                                                       static_cast<int>(g_plan.securebits);
  r.bounding_set_cleared = g_plan.drop_bounding;
  return r;
}

}  // namespace mltap::bpf
