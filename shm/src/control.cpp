// Flags set by the agent's producer-flag reaction (ControlBlock, written by the agent, so
// untrusted: names must be NUL-terminated, a half-done update reads as 0) and the background
// thread that turns flag changes into callbacks.
#include <cstdio>
#include <cstring>
#include <new>

#include "stream_core.hpp"

namespace mltap::detail {

using namespace mltap::format;

std::uint32_t StreamCore::read_flag(std::string_view flag) const noexcept {
  if (!control || flag.empty() || flag.size() >= kFlagNameMax) return 0;
  if (ring_lost.load(std::memory_order_relaxed)) return 0;
  for (int attempt = 0; attempt < 4; ++attempt) {
    const std::uint64_t g1 = aref(control->generation).load(std::memory_order_acquire);
    if (g1 & 1) continue;  // the agent is mid-update
    std::uint32_t value = 0;
    for (std::uint32_t i = 0; i < kControlFlags; ++i) {
      char name_copy[kFlagNameMax];
      std::memcpy(name_copy, control->flags[i].name, kFlagNameMax);
      if (name_copy[kFlagNameMax - 1] != '\0') continue;  // untrusted: not terminated
      if (std::strlen(name_copy) == flag.size() &&
          std::memcmp(name_copy, flag.data(), flag.size()) == 0) {
        value = aref(control->flags[i].value).load(std::memory_order_relaxed);
        break;
      }
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if (aref(control->generation).load(std::memory_order_relaxed) == g1) return value;
  }
  return 0;
}

void StreamCore::start_flag_thread() {
  flag_stop = false;
  flag_thread = std::thread([this] {
    std::unique_lock<std::mutex> lk(flag_mutex);
    while (!flag_stop) {
      flag_cv.wait_for(lk, std::chrono::milliseconds(100));
      if (flag_stop) break;
      for (auto& [flag, entry] : flag_callbacks) {
        const std::uint32_t v = read_flag(flag);
        if (v == entry.first) continue;
        entry.first = v;
        auto callbacks = entry.second;
        lk.unlock();
        for (auto& cb : callbacks) {
          try {
            cb(v);
          } catch (...) {
            std::fprintf(stderr, "mltap: flag callback for '%s' threw; ignored\n", flag.c_str());
          }
        }
        lk.lock();
        if (flag_stop) break;
      }
    }
  });
}

void StreamCore::stop_flag_thread() noexcept {
  if (!flag_thread.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(flag_mutex);
    flag_stop = true;
  }
  flag_cv.notify_all();
  flag_thread.join();
}

// In a forked child the parent's flag thread does not exist and its mutex may be held by it:
// forget the handle (joining or destroying it would be undefined) and start afresh.
void StreamCore::forget_parent_threads() noexcept {
  if (flag_thread.joinable()) {
    new std::thread(std::move(flag_thread));  // leaked on purpose: the thread is not ours
  }
  new (&flag_mutex) std::mutex();
  new (&flag_cv) std::condition_variable();
  flag_stop = false;
}

}  // namespace mltap::detail
