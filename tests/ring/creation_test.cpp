// A producer killed while it creates its segment leaves nothing behind: the SDK builds the
// segment as an unnamed file (O_TMPFILE) and links it under its name only once its header is
// complete (shm/FORMAT.md, "Files"). The kill is made deterministic with a seccomp filter that
// kills the child process at one system call of the creation sequence (the file created, sized,
// reserved, mapped): before this design each of them left a file with no magic that nobody
// could remove (test_faults counted 23-28 per 1,000 random kills).
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <fstream>

#include "mltap/naming.hpp"
#include "ring_fixture.hpp"

namespace mltap::test {
namespace {

#if defined(__x86_64__)
constexpr std::uint32_t kAuditArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr std::uint32_t kAuditArch = AUDIT_ARCH_AARCH64;
#else
constexpr std::uint32_t kAuditArch = 0;
#endif

// In the child: from now on, system call `nr` kills the whole process (SIGSYS), like a SIGKILL
// arriving exactly there.
bool kill_at_syscall(long nr) {
  sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kAuditArch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<std::uint32_t>(nr), 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof f / sizeof f[0]), f};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
}

struct KillPoint {
  const char* name;
  long nr;
};

class KilledDuringCreation : public ::testing::TestWithParam<KillPoint> {};

TEST_P(KilledDuringCreation, LeavesNoFileBehind) {
  if (kAuditArch == 0) GTEST_SKIP() << "no seccomp architecture constant for this CPU";
  TempShmDir dir;
  ASSERT_FALSE(dir.path().empty());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    StreamOptions o = small_options(dir.path());
    o.ns = "kc";
    if (!kill_at_syscall(GetParam().nr)) ::_exit(3);
    try {
      Stream s("t/killed", o);
      const double row[4] = {1, 2, 3, 4};
      s.write(std::span<const double>(row));
    } catch (...) {
      ::_exit(4);
    }
    ::_exit(0);  // the filtered call never came: the test below fails on the exit status
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status) << " at "
                                   << GetParam().name << " (not called while creating?)";
  EXPECT_EQ(WTERMSIG(status), SIGSYS);
  // Nothing of the namespace may stay: no half-created segment, no temporary.
  for (const auto& f : dir.files()) {
    const std::string name = f.substr(f.rfind('/') + 1);
    EXPECT_NE(name.rfind(naming::segment_prefix("kc"), 0), 0u)
        << name << " left by a producer killed at " << GetParam().name;
  }
}

INSTANTIATE_TEST_SUITE_P(Creation, KilledDuringCreation,
                         ::testing::Values(KillPoint{"ftruncate", SYS_ftruncate},
                                           KillPoint{"fallocate", SYS_fallocate},
                                           KillPoint{"fchmod", SYS_fchmod},
                                           KillPoint{"linkat", SYS_linkat}),
                         [](const auto& info) { return std::string(info.param.name); });

// A kill after the name exists, for contrast: the segment is complete (magic written), so the
// agent's usual removal of dead producers' segments applies to it.
TEST(KilledDuringCreation, AfterPublicationTheSegmentIsComplete) {
  if (kAuditArch == 0) GTEST_SKIP() << "no seccomp architecture constant for this CPU";
  TempShmDir dir;
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    StreamOptions o = small_options(dir.path());
    o.ns = "kc";
    Stream s("t/published", o);
    if (!kill_at_syscall(SYS_getppid)) ::_exit(3);
    ::syscall(SYS_getppid);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status));
  std::size_t segments = 0;
  for (const auto& f : dir.files()) {
    const std::string name = f.substr(f.rfind('/') + 1);
    if (!naming::is_segment_file_name("kc", name)) continue;
    ++segments;
    std::ifstream in(f, std::ios::binary);
    std::uint64_t magic = 0;
    in.read(reinterpret_cast<char*>(&magic), sizeof magic);
    EXPECT_EQ(magic, format::kSegmentMagic) << name;
  }
  EXPECT_EQ(segments, 1u);
}

}  // namespace
}  // namespace mltap::test
