// A process for the eBPF tests to track (or not): it waits for one line on stdin ("go"), so the
// test can register it first, then performs one action and exits.
//   mltap_ebpf_test_child exec-exit CODE          fork+exec /bin/sh -c "exit CODE", then exit 0
//   mltap_ebpf_test_child forks N                 fork N children that exit at once
//   mltap_ebpf_test_child sleep                   wait to be killed
//   mltap_ebpf_test_child oom CGROUP_DIR          join a memory cgroup, allocate until killed
//   mltap_ebpf_test_child rename TMP TARGET       write TMP, rename it onto TARGET
//   mltap_ebpf_test_child write PATH              open PATH for writing (O_TRUNC), write, close
//   mltap_ebpf_test_child delete PATH             unlink PATH
//   mltap_ebpf_test_child spin SECONDS            busy loop on CPU 0
//   mltap_ebpf_test_child spin-hold SECONDS       the same, then wait to be killed
//   mltap_ebpf_test_child dio PATH COUNT          O_DIRECT write+fsync+read of PATH, COUNT times
//   mltap_ebpf_test_child connect PORT            connect to 127.0.0.1:PORT (expected refused)
//   mltap_ebpf_test_child syn PORT SECONDS        non-blocking connect, wait, close
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

int fail(const char* what) {
  std::perror(what);
  return 100;
}

void wait_for_go() {
  char buf[8];
  (void)!read(0, buf, sizeof(buf));
}

int write_file(const char* path, int flags) {
  const int fd = open(path, flags, 0644);
  if (fd < 0) return fail("open");
  const char data[] = "model bytes\n";
  if (write(fd, data, sizeof(data) - 1) < 0) return fail("write");
  close(fd);
  return 0;
}

sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string cmd = argv[1];
  // Tell the test the exec is complete (fd 3, when the test provides it), then wait for "go".
  (void)!write(3, "r", 1);
  close(3);
  wait_for_go();
  if (cmd == "exec-exit" && argc == 3) {
    const pid_t c = fork();
    if (c == 0) {
      const std::string script = std::string("exit ") + argv[2];
      execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    int st = 0;
    waitpid(c, &st, 0);
    return 0;
  }
  if (cmd == "forks" && argc == 3) {
    const int n = std::atoi(argv[2]);
    for (int i = 0; i < n; ++i) {
      const pid_t c = fork();
      if (c == 0) _exit(0);
      waitpid(c, nullptr, 0);
    }
    return 0;
  }
  if (cmd == "sleep") {
    for (;;) pause();
  }
  if (cmd == "oom" && argc == 3) {
    const std::string procs = std::string(argv[2]) + "/cgroup.procs";
    FILE* f = std::fopen(procs.c_str(), "w");
    if (!f) return fail("cgroup.procs");
    std::fprintf(f, "%d\n", getpid());
    std::fclose(f);
    for (int i = 0; i < 4096; ++i) {
      char* p = static_cast<char*>(mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
      if (p == MAP_FAILED) return fail("mmap");
      std::memset(p, 1, 1 << 20);
    }
    return 3;  // not killed: the test fails on the missing OOM kill
  }
  if (cmd == "rename" && argc == 4) {
    if (int r = write_file(argv[2], O_WRONLY | O_CREAT | O_TRUNC)) return r;
    if (rename(argv[2], argv[3]) != 0) return fail("rename");
    return 0;
  }
  if (cmd == "write" && argc == 3) return write_file(argv[2], O_WRONLY | O_CREAT | O_TRUNC);
  if (cmd == "delete" && argc == 3) return unlink(argv[2]) == 0 ? 0 : fail("unlink");
  if ((cmd == "spin" || cmd == "spin-hold") && argc == 3) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    sched_setaffinity(0, sizeof(set), &set);
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(std::atoi(argv[2]));
    volatile unsigned long x = 0;
    while (std::chrono::steady_clock::now() < end) {
      for (int i = 0; i < 10000; ++i) x = x + 1;
    }
    if (cmd == "spin-hold") {
      for (;;) pause();  // stay alive so the test can read /proc/<pid>/schedstat
    }
    return 0;
  }
  if (cmd == "dio" && argc == 4) {
    const int n = std::atoi(argv[3]);
    const int fd = open(argv[2], O_RDWR | O_CREAT | O_DIRECT, 0644);
    if (fd < 0) return fail("open O_DIRECT");
    void* buf = nullptr;
    if (posix_memalign(&buf, 4096, 4096) != 0) return 101;
    std::memset(buf, 7, 4096);
    for (int i = 0; i < n; ++i) {
      if (pwrite(fd, buf, 4096, static_cast<off_t>(i % 64) * 4096) != 4096) return fail("pwrite");
      fdatasync(fd);
      if (pread(fd, buf, 4096, static_cast<off_t>(i % 64) * 4096) != 4096) return fail("pread");
    }
    close(fd);
    free(buf);
    return 0;
  }
  if (cmd == "connect" && argc == 3) {
    const int s = socket(AF_INET, SOCK_STREAM, 0);
    const sockaddr_in a = loopback(std::atoi(argv[2]));
    const int r = connect(s, reinterpret_cast<const sockaddr*>(&a), sizeof(a));
    close(s);
    return r == 0 ? 1 : 0;
  }
  if (cmd == "syn" && argc == 4) {
    const int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    const sockaddr_in a = loopback(std::atoi(argv[2]));
    (void)connect(s, reinterpret_cast<const sockaddr*>(&a), sizeof(a));
    usleep(static_cast<useconds_t>(std::atof(argv[3]) * 1e6));
    close(s);
    return 0;
  }
  return 2;
}
