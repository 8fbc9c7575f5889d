// pidfd system calls. glibc 2.36's <sys/pidfd.h> declares them without extern "C", so C++ cannot
// link against it; call the kernel directly (Linux >= 5.3).
#pragma once

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace mltap::core::sys {

inline int pidfd_open(pid_t pid, unsigned int flags) noexcept {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, flags));
}

inline int pidfd_send_signal(int pidfd, int sig, siginfo_t* info, unsigned int flags) noexcept {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, info, flags));
}

}  // namespace mltap::core::sys
