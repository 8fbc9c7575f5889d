// A program for reaction tests to run for real:
//   reaction_probe record <out> [args...]   write argv and environment to <out> (JSON), exit 0
//   reaction_probe fail <code>              print to stdout and stderr, exit <code>
//   reaction_probe hang                     print, then sleep forever
//   reaction_probe hang-ignore-term <pidfile>  ignore SIGTERM, start a child in the same process
//                                          group, write "<self> <child>" to <pidfile>, sleep
//   reaction_probe flood <bytes>            write <bytes> bytes to stdout, exit 0
//   reaction_probe wait-signal <ready> <out>  create <ready>, wait for SIGUSR1 (30 s at most),
//                                          then write "USR1" to <out> and exit 0 (exit 3 on timeout)
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

extern char** environ;

namespace {
volatile sig_atomic_t g_got = 0;
void on_usr1(int) { g_got = 1; }
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 64;
  const std::string mode = argv[1];
  if (mode == "record" && argc >= 3) {
    nlohmann::json doc;
    doc["argv"] = nlohmann::json::array();
    for (int i = 0; i < argc; ++i) doc["argv"].push_back(argv[i]);
    doc["env"] = nlohmann::json::array();
    for (char** e = environ; *e; ++e) doc["env"].push_back(*e);
    char cwd[4096];
    doc["cwd"] = getcwd(cwd, sizeof cwd) ? cwd : "";
    doc["stdin_is_devnull"] = isatty(0) == 0;
    std::ofstream(argv[2]) << doc.dump();
    std::printf("recorded %d args\n", argc);
    std::fprintf(stderr, "note on stderr\n");
    return 0;
  }
  if (mode == "fail" && argc >= 3) {
    std::printf("about to fail\n");
    std::fprintf(stderr, "failing on purpose\n");
    return std::atoi(argv[2]);
  }
  if (mode == "hang") {
    std::printf("hanging\n");
    std::fflush(stdout);
    for (;;) pause();
  }
  if (mode == "hang-ignore-term" && argc >= 3) {
    signal(SIGTERM, SIG_IGN);
    const pid_t child = fork();
    if (child == 0) {
      for (;;) pause();
    }
    std::ofstream(argv[2]) << getpid() << " " << child << "\n";
    std::printf("ignoring SIGTERM\n");
    std::fflush(stdout);
    for (;;) pause();
  }
  if (mode == "flood" && argc >= 3) {
    const long n = std::atol(argv[2]);
    std::string chunk(4096, 'x');
    for (long done = 0; done < n; done += static_cast<long>(chunk.size())) {
      const std::size_t len = static_cast<std::size_t>(std::min<long>(n - done, static_cast<long>(chunk.size())));
      if (fwrite(chunk.data(), 1, len, stdout) != len) return 1;
    }
    return 0;
  }
  if (mode == "wait-signal" && argc >= 4) {
    struct sigaction sa {};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, nullptr);
    std::ofstream(argv[2]) << getpid() << "\n";
    for (int i = 0; i < 3000 && !g_got; ++i) usleep(10000);
    if (!g_got) return 3;
    std::ofstream(argv[3]) << "USR1\n";
    return 0;
  }
  return 64;
}
