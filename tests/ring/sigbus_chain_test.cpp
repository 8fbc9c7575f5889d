// The reader's SIGBUS guard (agent/ingest/guarded_memory.cpp) handles only faults inside its own
// guarded accesses; every other SIGBUS goes to the handler that was installed before it (a host
// process's own, e.g. the SDK's ring guard when reader and producer share a process), instead of
// being reset to the default action. Each case runs in a forked child, whose previous handler
// exits with a code the parent checks.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "agent/ingest/guarded_memory.hpp"
#include "ring_fixture.hpp"

namespace mltap::test {
namespace {

constexpr int kChained = 42;
constexpr int kNotChained = 7;
constexpr int kNotFresh = 99;

// The guard installs itself once per process: the child must not have it yet (ctest runs each
// test in a process of its own; run together in one process, these tests skip).
void require_fresh_process() {
  struct sigaction now {};
  ::sigaction(SIGBUS, nullptr, &now);
  const bool installed = (now.sa_flags & SA_SIGINFO) ? now.sa_sigaction != nullptr
                                                     : now.sa_handler != SIG_DFL;
  if (installed) ::_exit(kNotFresh);
}

void previous_handler(int, siginfo_t* info, void*) {
  // 43 for a real fault (si_code > 0), 42 for a sent signal.
  ::_exit(info->si_code > 0 ? kChained + 1 : kChained);
}

void install_previous() {
  struct sigaction sa {};
  sa.sa_sigaction = previous_handler;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, nullptr);
}

int child_exit_code(pid_t child) {
  int status = 0;
  if (::waitpid(child, &status, 0) != child) return -1;
  if (WIFSIGNALED(status)) return 1000 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

#define EXPECT_CHILD_EXIT(child, code)                                                   \
  do {                                                                                   \
    const int got = child_exit_code(child);                                              \
    if (got == kNotFresh) GTEST_SKIP() << "the guard was installed by an earlier test"; \
    EXPECT_EQ(got, code);                                                                \
  } while (0)

TEST(SigbusGuard, ASentSigbusGoesToThePreviousHandler) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    require_fresh_process();
    install_previous();
    ingest::install_sigbus_guard();
    ::kill(::getpid(), SIGBUS);
    ::_exit(kNotChained);  // the guard reset SIGBUS to default and returned
  }
  EXPECT_CHILD_EXIT(child, kChained);
}

TEST(SigbusGuard, AFaultOutsideAGuardedAccessGoesToThePreviousHandler) {
  TempShmDir dir;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    require_fresh_process();
    install_previous();
    ingest::install_sigbus_guard();
    const std::string f = dir.path() + "/truncated";
    const int fd = ::open(f.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || ::ftruncate(fd, 8192) != 0) ::_exit(2);
    auto* p = static_cast<volatile char*>(::mmap(nullptr, 8192, PROT_READ, MAP_SHARED, fd, 0));
    if (p == MAP_FAILED || ::ftruncate(fd, 0) != 0) ::_exit(3);
    // A guarded access still turns the fault into false...
    char c = 0;
    if (ingest::guarded_copy(&c, const_cast<const char*>(p), 1)) ::_exit(4);
    // ...an unguarded one goes to the previous handler.
    c = p[4096];
    ::_exit(kNotChained + c);
  }
  EXPECT_CHILD_EXIT(child, kChained + 1);
}

// No previous handler: a fault outside a guarded access kills the process with SIGBUS as it
// would have without the guard.
TEST(SigbusGuard, WithoutAPreviousHandlerAFaultStillKills) {
  TempShmDir dir;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    require_fresh_process();
    ingest::install_sigbus_guard();
    const std::string f = dir.path() + "/truncated";
    const int fd = ::open(f.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || ::ftruncate(fd, 8192) != 0) ::_exit(2);
    auto* p = static_cast<volatile char*>(::mmap(nullptr, 8192, PROT_READ, MAP_SHARED, fd, 0));
    if (p == MAP_FAILED || ::ftruncate(fd, 0) != 0) ::_exit(3);
    const char c = p[0];
    ::_exit(kNotChained + c);
  }
  EXPECT_CHILD_EXIT(child, 1000 + SIGBUS);
}

}  // namespace
}  // namespace mltap::test
