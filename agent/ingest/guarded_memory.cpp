#include "agent/ingest/guarded_memory.hpp"

#include <setjmp.h>
#include <signal.h>

#include <cstring>
#include <mutex>

namespace mltap::ingest {
namespace {

thread_local sigjmp_buf t_env;
thread_local volatile sig_atomic_t t_active = 0;
std::atomic<std::uint64_t> g_caught{0};

// The SIGBUS disposition before ours (written once, before our handler is installed): a SIGBUS
// that is not a guarded access goes there, so a host process's own handler (the SDK's ring guard
// when mltapd's reader runs inside a producer, a runtime's fault handler) keeps working.
struct sigaction g_previous {};

void on_sigbus(int sig, siginfo_t* info, void* context) {
  if (t_active) {
    t_active = 0;
    g_caught.fetch_add(1, std::memory_order_relaxed);
    siglongjmp(t_env, 1);
  }
  // Not ours: chain to what was installed before.
  if ((g_previous.sa_flags & SA_SIGINFO) != 0) {
    if (g_previous.sa_sigaction != nullptr) {
      g_previous.sa_sigaction(sig, info, context);
      return;
    }
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
    return;
  }
  // Default (or ignored, which a fault cannot be): the default action. A fault repeats when we
  // return and terminates as it would have; a signal sent by someone is raised again.
  signal(sig, SIG_DFL);
  if (info == nullptr || info->si_code <= 0) raise(sig);
}

// Runs `fn` with the guard armed. noinline keeps the sigsetjmp frame alive during `fn`.
template <class Fn>
__attribute__((noinline)) bool run_guarded(Fn&& fn) noexcept {
  if (sigsetjmp(t_env, 0) != 0) return false;
  t_active = 1;
  fn();
  t_active = 0;
  return true;
}

}  // namespace

void install_sigbus_guard() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, nullptr, &g_previous);  // complete before our handler can run
    sigaction(SIGBUS, &sa, nullptr);
  });
}

bool guarded_copy(void* dst, const void* src, std::size_t n) noexcept {
  return run_guarded([&] { std::memcpy(dst, src, n); });
}

bool guarded_load(const std::uint64_t* p, std::uint64_t& out, std::memory_order order) noexcept {
  std::uint64_t v = 0;
  const bool ok = run_guarded(
      [&] { v = std::atomic_ref<std::uint64_t>(*const_cast<std::uint64_t*>(p)).load(order); });
  out = v;
  return ok;
}

bool guarded_store(std::uint64_t* p, std::uint64_t v) noexcept {
  return run_guarded([&] { std::atomic_ref<std::uint64_t>(*p).store(v, std::memory_order_release); });
}

bool guarded_store32(std::uint32_t* p, std::uint32_t v) noexcept {
  return run_guarded([&] { std::atomic_ref<std::uint32_t>(*p).store(v, std::memory_order_release); });
}

std::uint64_t sigbus_caught() noexcept { return g_caught.load(std::memory_order_relaxed); }

}  // namespace mltap::ingest
