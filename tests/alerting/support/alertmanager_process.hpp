// A real prometheus-alertmanager on loopback for tests: free port, temporary storage and config,
// clustering off; killed (and its log printed on failure) when the object goes away.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "support/test_util.hpp"

extern char** environ;

namespace mltap::testing {

// A TCP port nobody listens on right now (the caller binds it soon after).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

class AlertmanagerProcess {
 public:
  static constexpr const char* kBinary = "/usr/bin/prometheus-alertmanager";

  // `config_yaml` is written to alertmanager.yml. `port` 0 picks a free one (retried if taken).
  explicit AlertmanagerProcess(const std::string& config_yaml, int port = 0) {
    ::signal(SIGPIPE, SIG_IGN);  // a peer closing mid-request must not kill the test
    write_file(dir_.file("alertmanager.yml"), config_yaml, 0644);
    for (int attempt = 0; attempt < 3 && pid_ == 0; ++attempt) {
      port_ = port != 0 ? port : free_port();
      spawn();
      if (pid_ != 0 && !wait_ready(std::chrono::seconds(20))) stop();
      if (port != 0) break;
    }
  }
  ~AlertmanagerProcess() { stop(); }
  AlertmanagerProcess(const AlertmanagerProcess&) = delete;
  AlertmanagerProcess& operator=(const AlertmanagerProcess&) = delete;

  bool running() const { return pid_ != 0; }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string log() const { return read_file(dir_.file("alertmanager.log")); }

  // GET /api/v2/alerts (active alerts only); null on error.
  nlohmann::json alerts() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(std::chrono::seconds(5));
    auto r = c.Get("/api/v2/alerts");
    if (!r || r->status != 200) return nullptr;
    return nlohmann::json::parse(r->body, nullptr, false);
  }
  // POST /api/v2/alerts; returns the HTTP status (0 on connection failure).
  int post_alerts(const nlohmann::json& alerts) const {
    httplib::Client c("127.0.0.1", port_);
    auto r = c.Post("/api/v2/alerts", alerts.dump(), "application/json");
    return r ? r->status : 0;
  }

  void stop() {
    if (pid_ == 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    const bool exited = wait_until([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, std::chrono::seconds(5));
    if (!exited) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
    pid_ = 0;
  }

 private:
  void spawn() {
    const std::string log_path = dir_.file("alertmanager.log");
    std::vector<std::string> args = {
        kBinary,
        "--config.file=" + dir_.file("alertmanager.yml"),
        "--storage.path=" + dir_.file("data"),
        "--web.listen-address=127.0.0.1:" + std::to_string(port_),
        "--cluster.listen-address=",
        "--log.level=debug",
    };
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = 0;
    if (::posix_spawn(&pid, kBinary, &fa, nullptr, argv.data(), environ) == 0) pid_ = pid;
    posix_spawn_file_actions_destroy(&fa);
  }
  bool wait_ready(std::chrono::seconds timeout) {
    return wait_until(
        [&] {
          int status = 0;
          if (::waitpid(pid_, &status, WNOHANG) == pid_) {  // died (port taken?)
            pid_ = 0;
            return true;
          }
          httplib::Client c("127.0.0.1", port_);
          c.set_connection_timeout(std::chrono::milliseconds(200));
          auto r = c.Get("/-/ready");
          return r && r->status == 200;
        },
        timeout) && pid_ != 0;
  }

  TempDir dir_;
  int port_ = 0;
  pid_t pid_ = 0;
};

}  // namespace mltap::testing
